//! Forward FLOP counts of the two encoders (a multiply–add is 2 FLOPs), the yardstick a measured
//! throughput is compared with: `achieved TFLOP/s = flops / seconds`. Counted are the matrix
//! products (patch embedding, QKV and output projections, attention scores and values, the MLP,
//! the final projection); layer norms, softmax and activations are left out (< 1% at ViT-B/16).

use super::config::ClipConfig;

/// One transformer block on `n` tokens of width `d` with an MLP of width `m`.
fn block(n: f64, d: f64, m: f64) -> f64 {
    // QKV (3·d·d) and output (d·d) projections, scores (n·d) and values (n·d) per token, MLP (2·d·m).
    2.0 * n * (4.0 * d * d + 2.0 * n * d + 2.0 * d * m)
}

/// The image encoder's forward FLOPs for `images` images (no prompt tokens).
pub fn image_forward(cfg: &ClipConfig, images: usize) -> f64 {
    let v = &cfg.vision;
    let patches = (v.image_size / v.patch_size).pow(2) as f64;
    let (d, m) = (v.hidden_size as f64, v.intermediate_size as f64);
    let patch_embed = 2.0 * patches * (3 * v.patch_size * v.patch_size) as f64 * d;
    let blocks = v.num_hidden_layers as f64 * block(patches + 1.0, d, m);
    let proj = 2.0 * d * cfg.projection_dim as f64;
    images as f64 * (patch_embed + blocks + proj)
}

/// The text encoder's forward FLOPs for `texts` sequences of `tokens` positions.
pub fn text_forward(cfg: &ClipConfig, texts: usize, tokens: usize) -> f64 {
    let t = &cfg.text;
    let (d, m) = (t.hidden_size as f64, t.intermediate_size as f64);
    let blocks = t.num_hidden_layers as f64 * block(tokens as f64, d, m);
    let proj = 2.0 * d * cfg.projection_dim as f64;
    texts as f64 * (blocks + proj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vit_b16_image_forward_is_the_published_17_6_gflops() {
        // ViT-B/16 at 224 px is quoted at 17.6 GFLOPs as multiply–adds ×2 ≈ 35 GFLOPs here.
        let f = image_forward(&ClipConfig::vit_b_16(), 1) / 1e9;
        assert!((f - 35.2).abs() < 0.5, "{f} GFLOPs");
        assert_eq!(
            image_forward(&ClipConfig::vit_b_16(), 8),
            8.0 * image_forward(&ClipConfig::vit_b_16(), 1)
        );
    }

    #[test]
    fn text_forward_scales_with_tokens_and_sequences() {
        let c = ClipConfig::vit_b_16();
        // 77 tokens, width 512, 12 layers: about 5.9 GFLOPs a sequence.
        let f = text_forward(&c, 1, 77) / 1e9;
        assert!((f - 5.9).abs() < 0.2, "{f}");
        assert!(text_forward(&c, 1, 11) < text_forward(&c, 1, 77) / 6.0);
    }
}
