"""A learnable codec (wavelet all_learnable) is not trained against its own diffusion target."""

from __future__ import annotations

import torch

from diffsr.config import load_config
from diffsr.model import build_model

CFG = ["data.patch_size=32", "net.width=8", "net.channel_mult=[1,2]", "net.attention_levels=[]",
       "losses.terms=[{name: l1}]"]


def test_target_latent_carries_no_gradient_but_the_condition_does() -> None:
    model = build_model(load_config("difiisr-dwt-all-learnable", CFG))
    assert model.codec.is_learned
    hr, lr_up = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    z0, zc = model.encode_pair(hr, lr_up)
    assert not z0.z.requires_grad
    assert zc.z.requires_grad  # the codec still learns through the condition


def test_diffusion_loss_gives_the_codec_no_gradient_through_the_target() -> None:
    model = build_model(load_config("difiisr-dwt-all-learnable", CFG))
    hr = torch.rand(2, 1, 32, 32)
    down = list(model.codec.down.parameters())
    # with the condition held fixed, the diffusion loss reaches codec.down only through the
    # target z0: it must not reach it at all
    z0, zc = model.encode_pair(hr, torch.rand(2, 1, 32, 32))  # a condition unlike the target: loss > 0
    zc = zc.with_z(zc.z.detach())
    t = model.process.sample_t(2, hr.device, torch.Generator().manual_seed(0))
    noise = torch.randn(z0.z.shape, generator=torch.Generator().manual_seed(1))
    z_t = model.process.q_sample(z0.z, zc.z, t, noise)
    pred = model.process.denoise(model.bind_net(zc), z_t, t, zc.z)
    loss = model.process.loss(pred, z0.z, zc.z, t, noise).mean()
    assert float(loss) > 0
    loss.backward()
    assert all(p.grad is None or not bool(p.grad.any()) for p in down)
