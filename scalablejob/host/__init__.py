"""This machine: processes and their identity, GPUs, private files for secrets."""
