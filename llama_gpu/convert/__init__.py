"""Model conversion: GGUF re-quantization (and Hugging Face → GGUF) as background jobs."""
