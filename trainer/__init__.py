"""The research target: an MLX GPT trainer, its data pipeline and its sealed evaluator."""
