"""This machine: processes and their identity, jobs' cgroups, GPUs, private files for secrets."""
