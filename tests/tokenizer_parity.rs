//! Token ids against HF's CLIPTokenizerFast and open_clip's SimpleTokenizer (tests/fixtures/tokens.json).

mod common;

use common::fixture;
use gram_bench::clip::tokenizer::{ClipTokenizer, OPENAI_BPE_GZ};

fn cases() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixture("tokens.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["strings"].as_array().unwrap().clone()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn embedded_openai_bpe_matches_hf_and_open_clip() {
    let tok = ClipTokenizer::openai(77).unwrap();
    let cases = cases();
    assert!(cases.len() >= 30);
    let mut agree_with_open_clip = 0;
    for c in &cases {
        let s = c["text"].as_str().unwrap();
        let got = tok.encode(s).unwrap();
        assert_eq!(got, ids(&c["hf_ids"]), "HF ids differ for {s:?}");
        if ids(&c["hf_ids"]) == ids(&c["open_clip_ids"]) {
            agree_with_open_clip += 1;
        }
    }
    // open_clip differs from HF only on literal special-token strings (HF treats them as specials).
    assert!(
        agree_with_open_clip >= cases.len() - 1,
        "{agree_with_open_clip} of {}",
        cases.len()
    );
}

#[test]
fn tiny_tokenizer_json_and_its_bpe_derivation_agree_with_hf() {
    let from_json = ClipTokenizer::from_file(&fixture("tiny-clip-hf/tokenizer.json"), 77).unwrap();
    // The fixture tokenizer keeps the first 1000 - 512 - 2 merges of OpenAI's file.
    let derived = ClipTokenizer::from_bpe_gz(OPENAI_BPE_GZ, 486, 77).unwrap();
    assert_eq!(from_json.vocab_size(), 1000);
    assert_eq!(derived.vocab_size(), 1000);
    for c in cases() {
        let s = c["text"].as_str().unwrap();
        let want = ids(&c["tiny_ids"]);
        assert_eq!(
            from_json.encode(s).unwrap(),
            want,
            "tokenizer.json ids differ for {s:?}"
        );
        assert_eq!(derived.encode(s).unwrap(), want, "derived ids differ for {s:?}");
    }
}

#[test]
fn bad_tokenizer_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("tokenizer.json");
    std::fs::write(&junk, "{ not json").unwrap();
    let e = ClipTokenizer::from_file(&junk, 77).err().unwrap().to_string();
    assert!(e.contains("not a tokenizer.json"), "{e}");
    let gz = dir.path().join("vocab.txt.gz");
    std::fs::write(&gz, "plain text").unwrap();
    let e = ClipTokenizer::from_file(&gz, 77).err().unwrap().to_string();
    assert!(e.contains("gzip"), "{e}");
    let e = ClipTokenizer::from_file(&dir.path().join("missing.json"), 77)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing.json"), "{e}");
}
