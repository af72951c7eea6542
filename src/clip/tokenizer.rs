//! CLIP's byte-level BPE, through the `tokenizers` crate: loaded from an HF `tokenizer.json`, or
//! derived from OpenAI's `bpe_simple_vocab_16e6.txt.gz` exactly as OpenAI's SimpleTokenizer does
//! (the vocabulary file ships inside the binary).

use std::io::Read;
use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};

/// OpenAI's BPE merges (MIT licence, from openai/CLIP), the source of the 49,408-token vocabulary.
pub const OPENAI_BPE_GZ: &[u8] = include_bytes!("bpe_simple_vocab_16e6.txt.gz");

/// Number of merges OpenAI keeps: 49152 - 256 - 2.
pub(crate) const OPENAI_MERGES: usize = 48_894;

pub(crate) const SOT: &str = "<|startoftext|>";
pub(crate) const EOT: &str = "<|endoftext|>";

pub struct ClipTokenizer {
    inner: Tokenizer,
    context_length: usize,
}

/// GPT-2's byte-to-unicode table, in OpenAI's vocabulary order: the printable bytes (which map to
/// themselves) first, then every other byte mapped to 256, 257, ... in byte order.
fn bytes_to_unicode() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut order: Vec<char> = (0u32..256)
        .filter(|&b| printable(b))
        .filter_map(char::from_u32)
        .collect();
    order.extend(
        (0u32..256)
            .filter(|&b| !printable(b))
            .enumerate()
            .filter_map(|(i, _)| char::from_u32(256 + i as u32)),
    );
    order
}

impl ClipTokenizer {
    /// OpenAI's tokenizer (49,408 tokens), from the embedded vocabulary.
    pub fn openai(context_length: usize) -> Result<Self> {
        Self::from_bpe_gz(OPENAI_BPE_GZ, OPENAI_MERGES, context_length)
    }

    /// Loads `tokenizer.json`, or derives from a `bpe_simple_vocab_16e6.txt.gz` file.
    pub fn from_file(path: &Path, context_length: usize) -> Result<Self> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.ends_with(".gz") {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            return Self::from_bpe_gz(&bytes, OPENAI_MERGES, context_length)
                .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())));
        }
        if !path.exists() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            ));
        }
        let inner = Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: not a tokenizer.json ({e})", path.display())))?;
        Self::wrap(inner, context_length)
    }

    /// Derives the vocabulary from the first `n_merges` merges of a BPE merges file, as OpenAI's
    /// SimpleTokenizer does: 256 byte symbols, the same with `</w>`, the joined merges, then SOT/EOT.
    pub fn from_bpe_gz(gz: &[u8], n_merges: usize, context_length: usize) -> Result<Self> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_string(&mut text)
            .map_err(|e| Error::Tokenizer(format!("not a gzip'd BPE merges file: {e}")))?;
        let lines: Vec<&str> = text.split('\n').collect();
        if lines.len() < n_merges + 1 {
            return Err(Error::Tokenizer(format!(
                "BPE file has {} merges, {n_merges} needed",
                lines.len().saturating_sub(1)
            )));
        }
        let merges: Vec<&str> = lines[1..=n_merges].to_vec();
        let byte_chars = bytes_to_unicode();
        let mut vocab: Vec<String> = byte_chars.iter().map(|c| c.to_string()).collect();
        vocab.extend(byte_chars.iter().map(|c| format!("{c}</w>")));
        for m in &merges {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| Error::Tokenizer(format!("malformed merge line `{m}`")))?;
            vocab.push(format!("{a}{b}"));
        }
        vocab.push(SOT.into());
        vocab.push(EOT.into());
        let n = vocab.len();
        let vocab_map: serde_json::Map<String, serde_json::Value> = vocab
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, serde_json::json!(i)))
            .collect();
        // The pipeline HF's CLIPTokenizerFast saves: NFC, whitespace collapse, lowercase; CLIP's split
        // regex, then byte-level; BPE with `</w>`; SOT/EOT added around.
        let spec = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [
                {"id": n - 2, "content": SOT, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": n - 1, "content": EOT, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
                {"type": "Lowercase"}
            ]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
                 "behavior": "Removed", "invert": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
            ]},
            "post_processor": {"type": "RobertaProcessing", "sep": [EOT, n - 1], "cls": [SOT, n - 2],
                               "trim_offsets": false, "add_prefix_space": false},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": EOT, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab_map, "merges": merges}
        });
        let inner: Tokenizer = spec
            .to_string()
            .parse()
            .map_err(|e| Error::Tokenizer(format!("building the BPE tokenizer: {e}")))?;
        Self::wrap(inner, context_length)
    }

    fn wrap(mut inner: Tokenizer, context_length: usize) -> Result<Self> {
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| Error::Tokenizer(format!("vocabulary has no `{t}` token; not a CLIP tokenizer")))
        };
        id(SOT)?;
        id(EOT)?;
        // Truncation counts the added SOT/EOT, so an over-long text keeps its EOT as the last token.
        inner
            .with_truncation(Some(TruncationParams {
                max_length: context_length,
                strategy: TruncationStrategy::LongestFirst,
                direction: TruncationDirection::Right,
                stride: 0,
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        inner.with_padding(None);
        Ok(Self { inner, context_length })
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// SOT, tokens, EOT; at most `context_length` ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(format!("encoding {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token strings without SOT/EOT, e.g. to count how many tokens a class name takes.
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(format!("encoding {text:?}: {e}")))?;
        Ok(enc.get_tokens().to_vec())
    }

    /// Encodes and pads with 0 to `context_length`, as open_clip does.
    pub fn encode_padded(&self, texts: &[impl AsRef<str>]) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| {
                let mut ids = self.encode(t.as_ref())?;
                ids.resize(self.context_length, 0);
                Ok(ids)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection_onto_printable_chars() {
        let t = bytes_to_unicode();
        assert_eq!(t.len(), 256);
        let set: std::collections::HashSet<_> = t.iter().collect();
        assert_eq!(set.len(), 256);
        // OpenAI's vocabulary order: "!" is id 0, "a" is 64; space (byte 32) is the 33rd non-printable.
        assert_eq!(t[0], '!');
        assert_eq!(t[64], 'a');
        assert!(t.contains(&'Ġ'));
    }

    #[test]
    fn openai_vocab_is_complete_and_known_ids_match() {
        let tok = ClipTokenizer::openai(77).unwrap();
        assert_eq!(tok.vocab_size(), 49408);
        assert_eq!(
            (tok.inner.token_to_id(SOT), tok.inner.token_to_id(EOT)),
            (Some(49406), Some(49407))
        );
        assert_eq!(
            tok.encode("a photo of a cat.").unwrap(),
            vec![49406, 320, 1125, 539, 320, 2368, 269, 49407]
        );
    }

    #[test]
    fn truncation_keeps_end_of_text() {
        let tok = ClipTokenizer::openai(77).unwrap();
        let ids = tok.encode(&"word ".repeat(200)).unwrap();
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[0], 49406);
        assert_eq!(ids[76], 49407);
        let padded = tok.encode_padded(&["hi"]).unwrap();
        assert_eq!(padded[0].len(), 77);
        assert_eq!(&padded[0][3..], &[0; 74][..]);
    }
}
