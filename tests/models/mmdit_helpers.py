"""Shared by the SD3 and Flux model tests: diffusers' models made float64-faithful, and a diffusers
state dict rewritten in an original layout by tables the tests write (independently of
fastdiff.models.convert_mmdit)."""
import torch


def float64_faithful(monkeypatch):
    """diffusers computes its RMSNorm variance and Flux's rotary embedding in float32 whatever the
    input dtype, so its float64 models agree with float64 arithmetic to about 1e-7 only. Patch those
    two places to keep float64 inputs in float64 (the same formulas, float32 inputs unchanged), so
    the float64 diffusers model is an oracle to 1e-10."""
    from diffusers.models import normalization
    from diffusers.models.transformers import transformer_flux

    rms_forward = normalization.RMSNorm.forward

    def rms_norm(self, x):
        if x.dtype != torch.float64:
            return rms_forward(self, x)
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return y * self.weight if self.weight is not None else y

    rotary = transformer_flux.get_1d_rotary_pos_embed
    apply = transformer_flux.apply_rotary_emb

    def rotary64(dim, pos, **kw):  # diffusers' angles (float64 for Flux), cos and sin kept in float64
        freqs = rotary(dim, pos.double(), **{**kw, "use_real": False})
        return freqs.real.repeat_interleave(2, dim=1), freqs.imag.repeat_interleave(2, dim=1)

    def apply64(x, freqs, sequence_dim=2, **kw):
        if x.dtype != torch.float64:
            return apply(x, tuple(f.float() for f in freqs), sequence_dim=sequence_dim, **kw)
        cos, sin = (f[None, :, None] if sequence_dim == 1 else f[None, None] for f in freqs)
        real, imag = x.unflatten(-1, (-1, 2)).unbind(-1)
        return x * cos + torch.stack([-imag, real], dim=-1).flatten(3) * sin

    monkeypatch.setattr(normalization.RMSNorm, "forward", rms_norm)
    monkeypatch.setattr(transformer_flux, "get_1d_rotary_pos_embed", rotary64)
    monkeypatch.setattr(transformer_flux, "apply_rotary_emb", apply64)


def swap_halves(t):
    return torch.cat(t.chunk(2)[::-1])


def to_original(sd: dict, renames: dict, fused: dict, swapped=(), prefix: str = "") -> dict:
    """An original-layout state dict from a diffusers one. renames: diffusers key prefix -> original
    key prefix (the longest matching one applies; whole keys are prefixes too); fused: original name
    -> the diffusers names concatenated into it; swapped: original names whose two halves swap."""
    out, used = {}, set()
    for name, parts in fused.items():
        out[name] = torch.cat([sd[p] for p in parts])
        used.update(parts)
    for key, value in sd.items():
        if key in used:
            continue
        head = max((p for p in renames if key.startswith(p)), key=len, default=None)
        assert head is not None, f"no original name for {key}"
        out[renames[head] + key[len(head):]] = value.clone()
    for name in swapped:
        out[name] = swap_halves(out[name])
    return {prefix + k: v for k, v in out.items()}
