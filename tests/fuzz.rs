//! Fuzzing every file format gram-bench reads from outside: each target mutates a real, valid seed
//! file (byte flips, bytes set to edge values, truncation, insertion, deletion, splices of the file
//! into itself, numbers in its text swapped for edge values) and hands it to the project's own
//! reader, which must return `Ok` or one clean error: a panic, an abort or a stack overflow is a
//! finding. Mutations favour a file's first bytes, where its headers and sizes are.
//!
//! `GRAM_BENCH_FUZZ_CASES` sets the cases per target (default 256: the file in about a second in a
//! debug build); `.ci/run` runs it with 20,000. A failure prints the shrunk mutations and writes
//! the input that failed under `$TMPDIR/gram-bench-fuzz/`; failures are not persisted between runs
//! (each finding becomes a unit test beside its reader instead).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gram_bench::clip::preprocess::{load_rgb_for, Processor};
use gram_bench::clip::weights::SafetensorsStore;
use gram_bench::clip::{torch_zip, Preprocess};
use gram_bench::data::{catalog, few_shot_indices, fewshot_pkl, Dataset};
use gram_bench::suite::Suite;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn config() -> Config {
    let cases = std::env::var("GRAM_BENCH_FUZZ_CASES")
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("GRAM_BENCH_FUZZ_CASES={v} is not a count"))
        })
        .unwrap_or(256);
    Config {
        cases,
        // Each finding becomes a unit test beside its reader; nothing is written into the tree.
        failure_persistence: None,
        // Shrinking re-runs the reader; a few hundred steps find a short mutation list.
        max_shrink_iters: 512,
        ..Config::default()
    }
}

/// Numbers that break arithmetic: zero, signs, the edges of 8/16/32/64-bit integers, floats
/// that are not finite.
const EDGE_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "255",
    "65536",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "-1e308",
    "nan",
    "inf",
    "1099511627776",
];

#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: Index,
        head: bool,
        bit: u8,
    },
    Set {
        at: Index,
        head: bool,
        value: u8,
    },
    Truncate {
        at: Index,
    },
    Insert {
        at: Index,
        head: bool,
        bytes: Vec<u8>,
    },
    Remove {
        at: Index,
        head: bool,
        len: usize,
    },
    /// Copies `len` bytes from one place over another (a chunk repeated, a header duplicated).
    Splice {
        from: Index,
        to: Index,
        len: usize,
    },
    /// Replaces one run of ASCII digits with an edge number.
    Number {
        which: Index,
        value: Index,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let edge_byte = prop_oneof![Just(0u8), Just(0xff), Just(0x7f), Just(0x80), any::<u8>()];
    prop_oneof![
        (any::<Index>(), any::<bool>(), 0u8..8).prop_map(|(at, head, bit)| Mutation::Flip { at, head, bit }),
        (any::<Index>(), any::<bool>(), edge_byte).prop_map(|(at, head, value)| Mutation::Set { at, head, value }),
        any::<Index>().prop_map(|at| Mutation::Truncate { at }),
        (any::<Index>(), any::<bool>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, head, bytes)| Mutation::Insert { at, head, bytes }),
        (any::<Index>(), any::<bool>(), 1usize..64).prop_map(|(at, head, len)| Mutation::Remove { at, head, len }),
        (any::<Index>(), any::<Index>(), 1usize..256).prop_map(|(from, to, len)| Mutation::Splice { from, to, len }),
        (any::<Index>(), any::<Index>()).prop_map(|(which, value)| Mutation::Number { which, value }),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..4)
}

/// A position in `data` of length `len` (> 0); when `head`, within its first eighth (at least 64
/// bytes), where a file's header and sizes are.
fn pos(at: &Index, head: bool, len: usize) -> usize {
    at.index(if head { len.min(64.max(len / 8)) } else { len })
}

/// A byte as a text format gets it: printable ASCII, or a newline (a text file of invalid UTF-8 is
/// refused before its parser sees it, so raw bytes would mostly test that one check).
fn printable(b: u8) -> u8 {
    if b.is_multiple_of(50) {
        b'\n'
    } else {
        b' ' + b % 95
    }
}

fn mutate(seed: &[u8], ms: &[Mutation], text: bool) -> Vec<u8> {
    let byte = |b: u8| if text { printable(b) } else { b };
    let mut d = seed.to_vec();
    for m in ms {
        let n = d.len();
        match m {
            Mutation::Insert { at, head, bytes } => {
                let i = if n == 0 { 0 } else { pos(at, *head, n + 1) };
                d.splice(i..i, bytes.iter().map(|&b| byte(b)));
            }
            _ if n == 0 => {}
            Mutation::Flip { at, head, bit } => {
                let i = pos(at, *head, n);
                d[i] = byte(d[i] ^ (1 << bit));
            }
            Mutation::Set { at, head, value } => d[pos(at, *head, n)] = byte(*value),
            Mutation::Truncate { at } => d.truncate(at.index(n)),
            Mutation::Remove { at, head, len } => {
                let i = pos(at, *head, n);
                d.drain(i..(i + len).min(n));
            }
            Mutation::Splice { from, to, len } => {
                let (f, t) = (from.index(n), to.index(n));
                let chunk = d[f..(f + len).min(n)].to_vec();
                let end = (t + chunk.len()).min(n);
                d.splice(t..end, chunk);
            }
            Mutation::Number { which, value } => {
                let runs = digit_runs(&d);
                if !runs.is_empty() {
                    let (a, b) = runs[which.index(runs.len())];
                    let v = EDGE_NUMBERS[value.index(EDGE_NUMBERS.len())].as_bytes();
                    d.splice(a..b, v.iter().copied());
                }
            }
        }
    }
    d
}

/// Where the runs of ASCII digits are.
fn digit_runs(d: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < d.len() {
        if d[i].is_ascii_digit() {
            let start = i;
            while i < d.len() && d[i].is_ascii_digit() {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    runs
}

/// Runs `read` on `bytes`: its error if any, or a test failure for a panic (naming a file that holds
/// the input) or an error that is not one line.
fn no_panic(
    target: &str,
    bytes: &[u8],
    read: impl FnOnce() -> Option<String>,
) -> Result<Option<String>, TestCaseError> {
    match catch_unwind(AssertUnwindSafe(read)) {
        // One clear message: a line of its own, never empty.
        Ok(Some(e)) if e.trim().is_empty() || e.contains('\n') => {
            Err(TestCaseError::fail(format!("{target}: not a one-line error: {e:?}")))
        }
        Ok(e) => Ok(e),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let dir = std::env::temp_dir().join("gram-bench-fuzz");
            std::fs::create_dir_all(&dir).unwrap();
            let hash: u64 = bytes
                .iter()
                .fold(0xcbf29ce484222325, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3));
            let file = dir.join(format!("{target}-{hash:016x}"));
            std::fs::write(&file, bytes).unwrap();
            Err(TestCaseError::fail(format!(
                "{target} panicked ({msg}); input in {}",
                file.display()
            )))
        }
    }
}

/// The error's text, if any: what the user would see.
fn err<T>(r: gram_bench::Result<T>) -> Option<String> {
    r.err().map(|e| e.to_string())
}

const IMAGES: &[&str] = &[
    "tests/fixtures/images/hopper_gray.jpg",
    "tests/fixtures/images/present.png",
    "tests/fixtures/images/present_palette_alpha.png",
];

const CHECKPOINTS: &[&str] = &[
    "tests/fixtures/released/cocoop/eurosat/seed1/prompt_learner/model.pth.tar-2",
    "tests/fixtures/released/trained/coop/eurosat/seed1/prompt_learner/model.pth.tar-50",
];

const FEWSHOT: &[&str] = &[
    "tests/fixtures/coop_fewshot/shot_1-seed_1.pkl",
    "tests/fixtures/coop_fewshot/shot_1-seed_2.pkl",
];

const SUITES: &[&str] = &[
    "suites/backend-check.toml",
    "suites/few-shot.toml",
    "suites/gram-smoke.toml",
];

/// The tiny HF backbone (every tensor F32) and the linear probe's fixture (F32 and I64).
const SAFETENSORS: &[&str] = &[
    "tests/fixtures/tiny-clip-hf/model.safetensors",
    "tests/fixtures/linear_probe.safetensors",
];

/// CoOp's EuroSAT as the committed split file describes it (under `tests/fixtures/coop_split`).
fn eurosat() -> &'static (PathBuf, gram_bench::data::def::DatasetDef, Dataset) {
    static DS: OnceLock<(PathBuf, gram_bench::data::def::DatasetDef, Dataset)> = OnceLock::new();
    DS.get_or_init(|| {
        let root = fixture("tests/fixtures/coop_split");
        let def = catalog().into_iter().find(|d| d.name == "eurosat").unwrap();
        let ds = Dataset::load(&root, &def).unwrap();
        (root, def, ds)
    })
}

/// The image loader, then the preprocessing every decoded image goes through.
fn read_image(path: &Path) -> Option<String> {
    let mut first = None;
    for processor in [Processor::Dassl, Processor::Transformers] {
        match load_rgb_for(path, processor) {
            Ok(img) => {
                let crop = Preprocess::clip(32).eval_u8_for(&img, processor);
                assert_eq!(Preprocess::clip(32).normalize(&crop).len(), 3 * 32 * 32);
            }
            Err(e) => first = first.or(Some(e.to_string())),
        }
    }
    first
}

/// A checkpoint archive rebuilt with `pkl` for its `data.pkl`, every other member as in `seed`.
fn with_pickle(seed: &[u8], pkl: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut src = zip::ZipArchive::new(std::io::Cursor::new(seed)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..src.len() {
        let mut f = src.by_index(i).unwrap();
        let name = f.name().to_string();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        out.start_file(name.as_str(), o).unwrap();
        out.write_all(if name.ends_with("/data.pkl") { pkl } else { &bytes })
            .unwrap();
    }
    out.finish().unwrap().into_inner()
}

fn pickle_of(seed: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(seed)).unwrap();
    let name = z.file_names().find(|n| n.ends_with("/data.pkl")).unwrap().to_string();
    let mut pkl = Vec::new();
    z.by_name(&name).unwrap().read_to_end(&mut pkl).unwrap();
    pkl
}

#[test]
fn every_seed_reads() {
    // A seed that no longer reads would leave its target fuzzing only the first error path.
    for p in IMAGES {
        assert_eq!(read_image(&fixture(p)), None, "{p}");
    }
    for p in CHECKPOINTS {
        torch_zip::read(&fixture(p)).unwrap();
    }
    let (root, _, ds) = eurosat();
    for p in FEWSHOT {
        fewshot_pkl::read(&fixture(p), root, ds).unwrap();
    }
    for p in SUITES {
        Suite::load(&fixture(p)).unwrap();
    }
    for p in SAFETENSORS {
        SafetensorsStore::open(&[fixture(p)]).unwrap();
    }
}

/// Runs mutated inputs of `seeds` through `read` (given the seed's index, the input and a scratch folder;
/// it returns the reader's error, if any), and prints how many read and how many were refused: a
/// target whose every input is refused at the first check fuzzes nothing deeper.
fn fuzz(target: &str, text: bool, seeds: &[Vec<u8>], read: impl Fn(usize, &[u8], &Path) -> Option<String>) {
    use std::cell::Cell;
    let (ok, refused) = (Cell::new(0u32), Cell::new(0u32));
    let kinds = std::cell::RefCell::new(std::collections::BTreeMap::<String, u32>::new());
    let start = std::time::Instant::now();
    let mut runner = proptest::test_runner::TestRunner::new(config());
    let result = runner.run(&(0..seeds.len(), mutations()), |(seed, ms)| {
        let bytes = mutate(&seeds[seed], &ms, text);
        let dir = tempfile::tempdir().unwrap();
        let outcome = no_panic(target, &bytes, || read(seed, &bytes, dir.path()))?;
        let n = if outcome.is_none() { &ok } else { &refused };
        n.set(n.get() + 1);
        if let Some(e) = outcome {
            // The refusal's kind: its text past the scratch path, digits masked.
            let e = e.replace(&dir.path().display().to_string(), "");
            let kind: String = e
                .chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .take(70)
                .collect();
            *kinds.borrow_mut().entry(kind).or_default() += 1;
        }
        Ok(())
    });
    let mut kinds: Vec<(String, u32)> = kinds.into_inner().into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    eprintln!(
        "fuzz {target}: {} inputs read, {} refused with one error in {:.1} s ({} kinds; most often: {:?})",
        ok.get(),
        refused.get(),
        start.elapsed().as_secs_f64(),
        kinds.len(),
        kinds.iter().take(3).collect::<Vec<_>>()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn read_all(paths: &[&str]) -> Vec<Vec<u8>> {
    paths.iter().map(|p| std::fs::read(fixture(p)).unwrap()).collect()
}

#[test]
fn images_decode_or_give_one_error() {
    fuzz("image", false, &read_all(IMAGES), |_, bytes, dir| {
        // The loader takes the format from the bytes, not the name.
        let path = dir.join("image");
        std::fs::write(&path, bytes).unwrap();
        read_image(&path)
    });
}

#[test]
fn safetensors_headers_read_or_give_one_error() {
    fuzz("safetensors", false, &read_all(SAFETENSORS), |_, bytes, dir| {
        let path = dir.join("weights.safetensors");
        std::fs::write(&path, bytes).unwrap();
        let store = match SafetensorsStore::open(std::slice::from_ref(&path)) {
            Ok(s) => s,
            Err(e) => return Some(e.to_string()),
        };
        let names: Vec<String> = store.names().map(str::to_string).collect();
        names.iter().find_map(|n| err(store.read(n)))
    });
}

#[test]
fn checkpoint_archives_read_or_give_one_error() {
    fuzz("checkpoint-zip", false, &read_all(CHECKPOINTS), |_, bytes, dir| {
        let path = dir.join("model.pth.tar-1");
        std::fs::write(&path, bytes).unwrap();
        err(torch_zip::read(&path))
    });
}

#[test]
fn checkpoint_pickles_read_or_give_one_error() {
    // The pickle mutated inside an archive that is otherwise whole.
    let archives = read_all(CHECKPOINTS);
    let pickles: Vec<Vec<u8>> = archives.iter().map(|a| pickle_of(a)).collect();
    fuzz("checkpoint-pickle", false, &pickles, |seed, pkl, dir| {
        let path = dir.join("model.pth.tar-1");
        std::fs::write(&path, with_pickle(&archives[seed], pkl)).unwrap();
        err(torch_zip::read(&path))
    });
}

#[test]
fn few_shot_files_read_or_give_one_error() {
    let (root, _, ds) = eurosat();
    fuzz("fewshot-pkl", false, &read_all(FEWSHOT), |_, bytes, dir| {
        let path = dir.join("shot_1-seed_1.pkl");
        std::fs::write(&path, bytes).unwrap();
        err(fewshot_pkl::read(&path, root, ds))
    });
}

#[test]
fn split_files_read_or_give_one_error() {
    let (_, def, _) = eurosat();
    let seeds = read_all(&["tests/fixtures/coop_split/eurosat/split_zhou_EuroSAT.json"]);
    fuzz("split-json", true, &seeds, |_, bytes, dir| {
        std::fs::create_dir_all(dir.join("eurosat")).unwrap();
        std::fs::write(dir.join("eurosat/split_zhou_EuroSAT.json"), bytes).unwrap();
        match Dataset::load(dir, def) {
            Ok(ds) => {
                // What a cell does next with the splits.
                few_shot_indices(&ds.train, 2, 1);
                None
            }
            Err(e) => Some(e.to_string()),
        }
    });
}

#[test]
fn suites_validate_or_give_one_error() {
    fuzz("suite-toml", true, &read_all(SUITES), |_, bytes, dir| {
        let path = dir.join("suite.toml");
        std::fs::write(&path, bytes).unwrap();
        err(Suite::load(&path))
    });
}
