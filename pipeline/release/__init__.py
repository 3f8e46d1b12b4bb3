"""Releases: the deployable directory, its model card and its verification."""
