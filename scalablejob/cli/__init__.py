"""The command line: every `scalablejob` command, the worker, scaler and front-end commands included. It wires the
parts; nothing imports it."""
