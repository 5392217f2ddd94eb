"""vibe-plan: hardware-aware expert placement for expert-parallel MoE inference."""
