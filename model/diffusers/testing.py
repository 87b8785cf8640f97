"""Tiny random diffusers pipelines of each supported family, built in code (no download),
and the contract's guided Euler to compare them with: for tests and benchmarks, which
must never reach a hub (weights are random; `save_pretrained` makes a loadable folder).

Shapes follow diffusers' own pipeline tests; the tokenizer is `ByT5Tokenizer`, which needs
no vocabulary file (bytes), so the T5/UMT5 encoders get ByT5's 384-token vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import ByT5Tokenizer, T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

from model.sampling import cfg, euler

TEXT_DIM = 32
_TEXT = dict(
    vocab_size=384,
    d_model=TEXT_DIM,
    d_kv=8,
    d_ff=37,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
)


def _umt5() -> UMT5EncoderModel:
    torch.manual_seed(0)
    return UMT5EncoderModel(UMT5Config(**_TEXT)).eval()


def _t5() -> T5EncoderModel:
    torch.manual_seed(0)
    return T5EncoderModel(T5Config(**_TEXT)).eval()


def _wan_transformer(channels: int, seed: int, in_channels: int | None = None, **extra):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels or channels,
        out_channels=channels,
        text_dim=TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        **extra,
    ).eval()


def _wan_vae(ti2v: bool = False):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    if ti2v:  # Wan 2.2 TI2V-5B's VAE: 48 channels, 16x16 pixels per latent
        return AutoencoderKLWan(
            base_dim=3,
            z_dim=48,
            in_channels=12,
            out_channels=12,
            is_residual=True,
            patch_size=2,
            latents_mean=[0.1] * 48,
            latents_std=[1.5] * 48,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            scale_factor_spatial=16,
            scale_factor_temporal=4,
            temperal_downsample=[False, True, True],
        ).eval()
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    ).eval()


def wan21():
    """Wan 2.1 T2V: one transformer, Euler flow scheduler with shift 3."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    return WanPipeline(
        tokenizer=ByT5Tokenizer(),
        text_encoder=_umt5(),
        vae=_wan_vae(),
        transformer=_wan_transformer(16, 0),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )


def wan22_a14b():
    """Wan 2.2 A14B: two experts switched at boundary_ratio 0.875."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    return WanPipeline(
        tokenizer=ByT5Tokenizer(),
        text_encoder=_umt5(),
        vae=_wan_vae(),
        transformer=_wan_transformer(16, 0),
        transformer_2=_wan_transformer(16, 1),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        boundary_ratio=0.875,
    )


def wan22_ti2v():
    """Wan 2.2 TI2V-5B: 48-channel VAE with stride (4, 16, 16), one timestep per token."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    return WanPipeline(
        tokenizer=ByT5Tokenizer(),
        text_encoder=_umt5(),
        vae=_wan_vae(ti2v=True),
        transformer=_wan_transformer(48, 0),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        expand_timesteps=True,
    )


CLIP_DIM = 8


def _clip() -> tuple[object, object]:
    """A tiny CLIP vision tower (16-pixel images, 4-pixel patches) and its processor."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=CLIP_DIM,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=16,
        patch_size=4,
        projection_dim=CLIP_DIM,
    )
    return CLIPVisionModel(config).eval(), CLIPImageProcessor(size=16, crop_size=16)


def wan21_i2v():
    """Wan 2.1 I2V: mask + image latent on the channels (16 + 4 + 16) and CLIP image tokens."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

    encoder, processor = _clip()
    return WanImageToVideoPipeline(
        tokenizer=ByT5Tokenizer(),
        text_encoder=_umt5(),
        vae=_wan_vae(),
        transformer=_wan_transformer(16, 0, in_channels=36, image_dim=CLIP_DIM),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        image_encoder=encoder,
        image_processor=processor,
    )


def ltx():
    """LTX-Video 0.9.x: 8n+1 frames, 32-pixel multiple, non-causal decoder with timestep."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=TEXT_DIM,
    ).eval()
    torch.manual_seed(0)
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=True,
        patch_size=4,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    ).eval()
    with torch.no_grad():  # non-trivial normalisation, so the test sees it applied
        vae.latents_mean.copy_(torch.linspace(-0.2, 0.2, 8))
        vae.latents_std.copy_(torch.linspace(0.5, 1.5, 8))
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
    )
    return LTXPipeline(
        tokenizer=ByT5Tokenizer(),
        text_encoder=_t5(),
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )


def cogvideox():
    """CogVideoX (2B-like): v-prediction with CogVideoX's DDIM scheduler."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )

    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=TEXT_DIM,
        num_layers=1,
        sample_width=2,
        sample_height=2,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=226,
    ).eval()
    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    ).eval()
    scheduler = CogVideoXDDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        set_alpha_to_one=True,
        snr_shift_scale=3.0,
        timestep_spacing="trailing",
    )
    return CogVideoXPipeline(
        tokenizer=ByT5Tokenizer(),
        text_encoder=_t5(),
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )


BUILDERS = {
    "wan21": wan21,
    "wan22_a14b": wan22_a14b,
    "wan22_ti2v": wan22_ti2v,
    "wan21_i2v": wan21_i2v,
    "ltx": ltx,
    "cogvideox": cogvideox,
}


# --- the contract side of a parity check ----------------------------------------------
PROMPT, NEGATIVE, GUIDANCE = "a red bottle on a beach", "", 5.0


def contract_euler(m, x: Tensor, ts: Tensor, guidance: float = GUIDANCE) -> Tensor:
    """Guided Euler through the model contract: encode_text, velocity, model.sampling."""
    cond, uncond = m.encode_text([PROMPT]), m.encode_text([NEGATIVE])
    return euler(cfg(m.velocity, cond, uncond, guidance), x.clone(), ts)


def pixels(frames: Tensor) -> Tensor:
    """A pipeline's output_type="pt" video [B, F, 3, H, W] in [0, 1] as uint8 [B, F, H, W, 3]."""
    return (frames.float() * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2)


def level_error(a: Tensor, b: Tensor) -> int:
    """Largest difference between two uint8 videos, in levels."""
    return int((a.int() - b.int()).abs().max())
