from whisper_npu.cli import run

if __name__ == "__main__":  # worker processes (spawn) may import this module again
    run()
