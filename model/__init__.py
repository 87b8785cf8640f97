"""Latent video diffusion model."""
