//! The tensors of a `torch.save` zip archive (`<name>/data.pkl` and `<name>/data/<key>`), read by a
//! small pickle machine that builds only what a state dict needs and tolerates everything else.
//!
//! Why not burn's reader alone: a checkpoint as Dassl's `save_checkpoint` writes it also pickles the
//! optimizer (its `state` has integer keys, `{0: {"momentum_buffer": …}}`) and the scheduler (whose
//! warm-up wrapper pickles its successor object, with the optimizer's `defaultdict` inside); burn's
//! reader refuses both ("dict key must be a string", "Unsupported Python type"), so every released
//! CoOp checkpoint was refused. Here dict keys may be anything, unknown classes become opaque
//! values, and only `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter` with their storages
//! are understood: reading a checkpoint never executes or needs any of its other contents.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::pickle::{Node, Pickle, TensorRef, MAX_PICKLE_BYTES};
use crate::error::{Error, Result};

/// The most bytes a checkpoint's tensors may take, both as the storage bytes read for them and as
/// the f32 values they decode to (4 GiB). Released prompt checkpoints take under 160 MB (CoOp's
/// ImageNet `token_suffix` is 1000 × 72 × 512 floats); the bound keeps a hostile file — a storage
/// that claims terabytes, one tensor under a million names — from taking memory without end.
const MAX_TENSOR_BYTES: u64 = 4 << 30;

/// One tensor of a state dict, as f32 values in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// What a checkpoint file holds: the tensors of its `state_dict` entry (or of its top level, for a
/// bare state dict) by name, and its `epoch` when it has one.
#[derive(Debug)]
pub struct Checkpoint {
    pub tensors: Vec<(String, Tensor)>,
    pub epoch: Option<i64>,
}

fn bad(path: &Path, m: impl std::fmt::Display) -> Error {
    Error::Input(format!("{}: not a readable PyTorch checkpoint: {m}", path.display()))
}

/// Whether `path` is a zip archive (what `torch.save` writes since PyTorch 1.6).
pub(crate) fn is_zip(path: &Path) -> bool {
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head == *b"PK\x03\x04"
}

/// Reads `data.pkl`, refusing one over `limit` bytes (a small compressed member can inflate to any
/// size, whatever the archive claims).
fn read_pickle(f: impl Read, limit: u64) -> std::result::Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("data.pkl: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("data.pkl holds more than {limit} bytes (this reader's limit)"));
    }
    Ok(bytes)
}

/// Reads the state dict of a `torch.save` zip archive.
pub fn read(path: &Path) -> Result<Checkpoint> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(path, e))?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1)
        .map(str::to_string)
        .ok_or_else(|| bad(path, "no <archive>/data.pkl in the zip"))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let pkl = zip
        .by_name(&pkl_name)
        .map_err(|e| e.to_string())
        .and_then(|f| read_pickle(f, MAX_PICKLE_BYTES))
        .map_err(|e| bad(path, e))?;
    let pickle = Pickle::parse(&pkl).map_err(|m| bad(path, format!("data.pkl: {m}")))?;
    let (epoch, tensors) = state_dict(&pickle).map_err(|m| bad(path, m))?;
    let needed = storage_needs(&tensors, MAX_TENSOR_BYTES).map_err(|m| bad(path, m))?;
    let mut storages: HashMap<&str, Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if !storages.contains_key(t.key.as_str()) {
            // Only the bytes its views reach are read: a storage member cannot take more memory
            // than the bound checked above, whatever size it claims or inflates to.
            let mut bytes = Vec::new();
            zip.by_name(&format!("{prefix}data/{}", t.key))
                .map_err(|e| e.to_string())
                .and_then(|f| {
                    f.take(needed[t.key.as_str()])
                        .read_to_end(&mut bytes)
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| bad(path, format!("storage {} of `{name}`: {e}", t.key)))?;
            storages.insert(&t.key, bytes);
        }
        let values = gather(t, &storages[t.key.as_str()]).map_err(|m| bad(path, format!("`{name}`: {m}")))?;
        let shape = t.size.iter().map(|&d| d as usize).collect();
        out.push((name.to_string(), Tensor { shape, values }));
    }
    if out.is_empty() {
        return Err(bad(path, "no tensors in its state dict"));
    }
    Ok(Checkpoint { tensors: out, epoch })
}

/// A checkpoint's `epoch` and its state dict's tensors by name, as the pickle holds them.
type StateDict<'p> = (Option<i64>, Vec<(&'p str, &'p TensorRef)>);

/// The pickle's `epoch` and the tensors of its state dict (its `state_dict` entry, or its top level),
/// one per name: a name set twice keeps its first place and its last tensor, as a Python dict does.
fn state_dict(p: &Pickle) -> std::result::Result<StateDict<'_>, String> {
    let Node::Dict(entries) = p.root() else {
        return Err("the pickle's top level is not a dict".into());
    };
    let epoch = match p.get(entries, "epoch") {
        Some(Node::Int(e)) => Some(*e),
        _ => None,
    };
    let state = match p.get(entries, "state_dict") {
        Some(Node::Dict(d)) => d,
        Some(_) => return Err("`state_dict` is not a dict".into()),
        None => entries,
    };
    let mut tensors: Vec<(&str, &TensorRef)> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for &(k, v) in state {
        let (Some(name), Node::Tensor(t)) = (p.str(k), p.node(v)) else {
            continue;
        };
        match at.get(name) {
            Some(&i) => tensors[i].1 = t,
            None => {
                at.insert(name, tensors.len());
                tensors.push((name, t));
            }
        }
    }
    Ok((epoch, tensors))
}

/// How a tensor sits in its storage: bytes per element and how to decode one, its element count,
/// and how many of the storage's elements its last one needs (`last index + 1`, 0 when empty).
struct Layout {
    width: u64,
    decode: fn(&[u8]) -> f32,
    numel: u64,
    reach: u64,
}

/// Every size, stride and offset comes from the file, so the arithmetic is checked: an overflow is
/// an error naming the numbers.
fn layout(t: &TensorRef) -> std::result::Result<Layout, String> {
    let (width, decode): (u64, fn(&[u8]) -> f32) = match t.dtype.as_str() {
        "FloatStorage" => (4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        "DoubleStorage" => (8, |b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
        "HalfStorage" => (2, |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        "BFloat16Storage" => (2, |b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        other => return Err(format!("storage type {other} is not a float type")),
    };
    if t.size.len() != t.stride.len() {
        return Err(format!(
            "its size {:?} and stride {:?} differ in rank",
            t.size, t.stride
        ));
    }
    let numel = t
        .size
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("its size {:?} overflows 64 bits", t.size))?;
    if numel == 0 {
        return Ok(Layout {
            width,
            decode,
            numel,
            reach: 0,
        });
    }
    // The last element's index, offset + Σ (size − 1) · stride, and the bytes up to it.
    let reach = t
        .size
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |a, (&d, &s)| {
            (d - 1).checked_mul(s).and_then(|x| a.checked_add(x))
        })
        .and_then(|last| last.checked_add(1))
        .filter(|r| r.checked_mul(width).is_some())
        .ok_or_else(|| format!("its offset {} and strides {:?} overflow 64 bits", t.offset, t.stride))?;
    Ok(Layout {
        width,
        decode,
        numel,
        reach,
    })
}

/// The bytes to read of each storage (as far as its furthest view reaches), refusing a state dict
/// whose tensors would take more than `limit` bytes, read or decoded, before anything is read.
fn storage_needs<'p>(
    tensors: &[(&str, &'p TensorRef)],
    limit: u64,
) -> std::result::Result<HashMap<&'p str, u64>, String> {
    let mut needs: HashMap<&str, u64> = HashMap::new();
    let (mut read, mut decoded) = (0u64, 0u64);
    for (name, t) in tensors {
        let l = layout(t).map_err(|m| format!("`{name}`: {m}"))?;
        let need = needs.entry(&t.key).or_default();
        let more = (l.reach * l.width).saturating_sub(*need);
        *need += more;
        read = read.saturating_add(more);
        decoded = decoded.saturating_add(l.numel.saturating_mul(4));
        if decoded > limit || read > limit {
            return Err(format!(
                "its tensors take more than {limit} bytes (this reader's limit, which bounds its memory)"
            ));
        }
    }
    Ok(needs)
}

/// The tensor's elements in row-major order, read through its offset and strides; a view that does
/// not fit its storage is refused before its output is allocated.
fn gather(t: &TensorRef, storage: &[u8]) -> std::result::Result<Vec<f32>, String> {
    let Layout {
        width,
        decode,
        numel,
        reach,
    } = layout(t)?;
    let have = storage.len() as u64 / width;
    if reach > have {
        return Err(format!(
            "element {} is beyond its storage of {have} elements ({} bytes)",
            reach - 1,
            storage.len()
        ));
    }
    if numel > have {
        return Err(format!(
            "its {numel} elements are more than its storage holds ({have}): an overlapping view"
        ));
    }
    // Every index below is at most `reach − 1`, inside `storage`: no arithmetic here can overflow.
    let (n, width) = (numel as usize, width as usize);
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0u64; t.size.len()];
    for _ in 0..n {
        let at = (t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<u64>()) as usize;
        out.push(decode(&storage[at * width..(at + 1) * width]));
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < t.size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/released/trained/coop/eurosat/seed1/prompt_learner/model.pth.tar-50")
    }

    #[test]
    fn a_dassl_checkpoint_reads_its_state_dict_past_the_optimizer_and_scheduler() {
        let expected: serde_json::Value = serde_json::from_slice(
            &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/released/trained/expected.json"))
                .unwrap(),
        )
        .unwrap();
        let f32s = |v: &serde_json::Value| -> Vec<f32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        };
        let c = read(&fixture()).unwrap();
        assert_eq!(c.epoch, Some(50));
        let names: Vec<&str> = c.tensors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ctx", "token_prefix", "token_suffix"]);
        assert_eq!(c.tensors[0].1.shape, [4, 64]);
        assert_eq!(c.tensors[0].1.values, f32s(&expected["ctx"]["values"]));
        // Views into one shared storage, at an offset and with strides.
        assert_eq!(c.tensors[1].1.shape, [4, 1, 64]);
        assert_eq!(c.tensors[1].1.values[..64], f32s(&expected["token_prefix_first"])[..]);
        assert_eq!(c.tensors[2].1.values[..64], f32s(&expected["token_suffix_first"])[..]);
    }

    #[test]
    fn burns_reader_alone_refuses_the_same_file() {
        // What every released CoOp checkpoint met before this reader (kept as the reason for it).
        let e = burn_store::pytorch::PytorchReader::with_top_level_key(fixture(), "state_dict").err();
        assert!(e.is_some());
    }

    /// SHORT_BINUNICODE.
    fn s(x: &str) -> Vec<u8> {
        let mut b = vec![0x8c, x.len() as u8];
        b.extend_from_slice(x.as_bytes());
        b
    }

    /// LONG1 of 8 bytes: any i64.
    fn int(v: i64) -> Vec<u8> {
        let mut b = vec![0x8a, 8];
        b.extend(v.to_le_bytes());
        b
    }

    /// MARK, the items, TUPLE.
    fn tuple(items: &[Vec<u8>]) -> Vec<u8> {
        let mut b = vec![b'('];
        items.iter().for_each(|i| b.extend(i));
        b.push(b't');
        b
    }

    /// `_rebuild_tensor_v2(('storage', torch.FloatStorage, '0', 'cpu', 4), offset, size, stride)`.
    fn tensor(offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
        let mut pid = tuple(&[
            s("storage"),
            b"ctorch\nFloatStorage\n".to_vec(),
            s("0"),
            s("cpu"),
            int(4),
        ]);
        pid.push(b'Q');
        let ints = |v: &[i64]| tuple(&v.iter().map(|&x| int(x)).collect::<Vec<_>>());
        let mut b = b"ctorch._utils\n_rebuild_tensor_v2\n".to_vec();
        b.extend(tuple(&[pid, int(offset), ints(size), ints(stride)]));
        b.push(b'R');
        b
    }

    /// Protocol 2: `{key: value, …}` of already encoded items, then STOP.
    fn dict(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = vec![b'}', b'('];
        for (k, v) in entries {
            b.extend(s(k));
            b.extend(v);
        }
        b.push(b'u');
        b
    }

    fn pickle(ops: &[u8]) -> Vec<u8> {
        let mut b = vec![0x80, 2];
        b.extend(ops);
        b.push(b'.');
        b
    }

    /// A `torch.save`-shaped archive of `pkl` and one storage `0`.
    fn archive(dir: &Path, pkl: &[u8], storage: &[u8]) -> std::path::PathBuf {
        use std::io::Write;
        let p = dir.join("model.pth");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
        let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        z.start_file("archive/data.pkl", o).unwrap();
        z.write_all(pkl).unwrap();
        z.start_file("archive/data/0", o).unwrap();
        z.write_all(storage).unwrap();
        z.finish().unwrap();
        p
    }

    fn floats(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn read_err(pkl: &[u8], storage: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let e = read(&archive(dir.path(), pkl, storage)).unwrap_err().to_string();
        assert!(e.contains("not a readable PyTorch checkpoint"), "{e}");
        e
    }

    #[test]
    fn a_hand_written_state_dict_reads_through_offset_and_strides() {
        // A 2 × 2 transposed view at offset 1 of [0, 1, 2, 3, 4]: [[1, 3], [2, 4]].
        let pkl = pickle(&dict(&[("state_dict", dict(&[("w", tensor(1, &[2, 2], &[1, 2]))]))]));
        let dir = tempfile::tempdir().unwrap();
        let c = read(&archive(dir.path(), &pkl, &floats(&[0., 1., 2., 3., 4.]))).unwrap();
        assert_eq!(c.tensors[0].1.shape, [2, 2]);
        assert_eq!(c.tensors[0].1.values, [1., 3., 2., 4.]);
    }

    #[test]
    fn a_size_of_two_to_the_forty_is_refused_before_anything_is_allocated() {
        let storage = floats(&[1., 2., 3., 4.]);
        // Strided: it would reach 4 TiB of storage. Broadcast (stride 0): it reads 4 bytes but would
        // decode to 4 TiB.
        for stride in [1, 0] {
            let pkl = pickle(&dict(&[("w", tensor(0, &[1 << 40], &[stride]))]));
            let e = read_err(&pkl, &storage);
            assert!(
                e.contains("its tensors take more than 4294967296 bytes (this reader's limit"),
                "{e}"
            );
        }
        // `gather` itself refuses both before allocating its output.
        let t = |stride| TensorRef {
            dtype: "FloatStorage".into(),
            key: "0".into(),
            offset: 0,
            size: vec![1 << 40],
            stride: vec![stride],
        };
        let e = gather(&t(1), &storage).unwrap_err();
        assert_eq!(
            e,
            "element 1099511627775 is beyond its storage of 4 elements (16 bytes)"
        );
        let e = gather(&t(0), &storage).unwrap_err();
        assert_eq!(
            e,
            "its 1099511627776 elements are more than its storage holds (4): an overlapping view"
        );
    }

    #[test]
    fn overflowing_sizes_strides_and_offsets_are_errors() {
        let t = |offset: u64, size: Vec<u64>, stride: Vec<u64>| TensorRef {
            dtype: "FloatStorage".into(),
            key: "0".into(),
            offset,
            size,
            stride,
        };
        let storage = floats(&[1., 2.]);
        for (t, want) in [
            (
                t(0, vec![1 << 32, 1 << 32, 2], vec![1, 1, 1]),
                "its size [4294967296, 4294967296, 2] overflows 64 bits",
            ),
            (
                t(0, vec![3], vec![1 << 63]),
                "its offset 0 and strides [9223372036854775808] overflow 64 bits",
            ),
            (
                t(u64::MAX, vec![1], vec![1]),
                "its offset 18446744073709551615 and strides [1] overflow 64 bits",
            ),
            // The byte position of the last element overflows (× 4 bytes).
            (
                t(1 << 62, vec![1], vec![1]),
                "its offset 4611686018427387904 and strides [1] overflow 64 bits",
            ),
            (
                t(0, vec![2, 2], vec![1]),
                "its size [2, 2] and stride [1] differ in rank",
            ),
        ] {
            assert_eq!(gather(&t, &storage).unwrap_err(), want);
            let e = storage_needs(&[("w", &t)], MAX_TENSOR_BYTES).unwrap_err();
            assert_eq!(e, format!("`w`: {want}"));
        }
        // A negative offset is refused where the pickle builds the tensor.
        let e = read_err(&pickle(&dict(&[("w", tensor(-1, &[1], &[1]))])), &storage);
        assert!(e.contains("a tensor's offset -1 is negative"), "{e}");
    }

    #[test]
    fn one_tensor_under_many_names_is_bounded_by_what_it_decodes_to() {
        // A clone bomb at the state dict's level: the same 2-element tensor under 1,000 names would
        // decode to 8,000 bytes; a 4,000-byte limit refuses it before any storage is read.
        let mut ops = vec![b'}'];
        ops.extend(tensor(0, &[2], &[1]));
        ops.extend([b'q', 0, b'0', b'(']);
        for i in 0..1000 {
            ops.extend(s(&format!("w{i}")));
            ops.extend([b'h', 0]);
        }
        ops.push(b'u');
        let p = Pickle::parse(&pickle(&ops)).unwrap();
        let (_, tensors) = state_dict(&p).unwrap();
        assert_eq!(tensors.len(), 1000);
        let e = storage_needs(&tensors, 4000).unwrap_err();
        assert_eq!(
            e,
            "its tensors take more than 4000 bytes (this reader's limit, which bounds its memory)"
        );
        // The storage is read once however many views share it.
        assert_eq!(storage_needs(&tensors, 8000).unwrap()["0"], 8);
    }

    #[test]
    fn a_deep_pickle_is_one_error_and_a_deep_optimizer_beside_the_state_dict_reads() {
        const N: usize = 300_000;
        let mut deep = vec![b'('; N];
        deep.extend(std::iter::repeat_n(b'l', N));
        let e = read_err(&pickle(&deep), &floats(&[1.]));
        assert!(e.contains("the pickle's top level is not a dict"), "{e}");
        let pkl = pickle(&dict(&[
            ("state_dict", dict(&[("w", tensor(0, &[1], &[1]))])),
            ("optimizer", deep),
        ]));
        let dir = tempfile::tempdir().unwrap();
        let c = read(&archive(dir.path(), &pkl, &floats(&[7.]))).unwrap();
        assert_eq!(
            c.tensors,
            [(
                "w".to_string(),
                Tensor {
                    shape: vec![1],
                    values: vec![7.]
                }
            )]
        );
    }

    #[test]
    fn a_state_dict_memoized_before_it_was_filled_reads_its_tensors() {
        // {"source": {} PUT 1 (filled by SETITEMS after the PUT), "state_dict": GET 1}: a memo
        // holding a copy taken at the PUT read the state dict as empty ("no tensors").
        let mut ops = vec![b'}', b'('];
        ops.extend(s("source"));
        ops.extend([b'}', b'q', 1, b'(']);
        ops.extend(s("w"));
        ops.extend(tensor(0, &[1], &[1]));
        ops.push(b'u');
        ops.extend(s("state_dict"));
        ops.extend([b'h', 1, b'u']);
        let dir = tempfile::tempdir().unwrap();
        let c = read(&archive(dir.path(), &pickle(&ops), &floats(&[5.]))).unwrap();
        assert_eq!(c.tensors[0].1.values, [5.]);
    }

    #[test]
    fn a_huge_length_or_an_oversized_pickle_is_one_error() {
        let mut pkl = vec![0x80, 2, 0x8d];
        pkl.extend([0xff; 8]);
        let e = read_err(&pkl, &[]);
        assert!(
            e.contains("data.pkl: a length of 18446744073709551615 bytes at byte 11 runs past the end"),
            "{e}"
        );
        let e = read_pickle(&[0u8; 100][..], 50).unwrap_err();
        assert_eq!(e, "data.pkl holds more than 50 bytes (this reader's limit)");
        assert_eq!(read_pickle(&[0u8; 50][..], 50).unwrap().len(), 50);
    }

    #[test]
    fn a_damaged_checkpoint_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(fixture()).unwrap();
        let p = dir.path().join("cut.pth.tar-50");
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("not a readable PyTorch checkpoint"), "{e}");
    }
}
