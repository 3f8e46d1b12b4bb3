"""AMD's NPU: the operator table, the VitisAI EP surface, the partition forecast, compile."""
