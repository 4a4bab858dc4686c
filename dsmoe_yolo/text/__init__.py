"""Text guidance: prompts, frozen-LLM embeddings, caching, binding to models."""
