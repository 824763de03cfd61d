"""The research target, candidate code only: the MLX GPT trainer (train.py, the model program's file) and its data
pipeline (prepare.py, data_sources.py: the data program's). Runs only in a jail; imports only inside/."""
