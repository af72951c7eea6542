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

use crate::error::{Error, Result};

/// A pickled value, as far as a state dict needs it.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Insertion-ordered; keys of any kind (Dassl's optimizer state has integers).
    Dict(Vec<(Value, Value)>),
    /// `module.name` of a GLOBAL not yet called.
    Global(String),
    /// A persistent storage reference: (element type, key of `data/<key>`).
    Storage(String, String),
    Tensor(TensorRef),
    /// An object of a class this reader does not build (optimizers, schedulers, …).
    Opaque(String),
    Mark,
}

#[derive(Clone, Debug, PartialEq)]
struct TensorRef {
    dtype: String,
    key: String,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

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
    let mut pkl = Vec::new();
    zip.by_name(&pkl_name)
        .and_then(|mut f| f.read_to_end(&mut pkl).map_err(Into::into))
        .map_err(|e| bad(path, e))?;
    let top = Machine::new(&pkl)
        .run()
        .map_err(|m| bad(path, format!("data.pkl: {m}")))?;
    let entries = match &top {
        Value::Dict(d) => d,
        _ => return Err(bad(path, "the pickle's top level is not a dict")),
    };
    let get = |k: &str| {
        entries
            .iter()
            .find(|(key, _)| *key == Value::Str(k.into()))
            .map(|(_, v)| v)
    };
    let epoch = match get("epoch") {
        Some(Value::Int(e)) => Some(*e),
        _ => None,
    };
    let state = match get("state_dict") {
        Some(Value::Dict(d)) => d,
        Some(_) => return Err(bad(path, "`state_dict` is not a dict")),
        None => entries,
    };
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors = Vec::new();
    for (k, v) in state {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else {
            continue;
        };
        if !storages.contains_key(&t.key) {
            let mut bytes = Vec::new();
            zip.by_name(&format!("{prefix}data/{}", t.key))
                .and_then(|mut f| f.read_to_end(&mut bytes).map_err(Into::into))
                .map_err(|e| bad(path, format!("storage {} of `{name}`: {e}", t.key)))?;
            storages.insert(t.key.clone(), bytes);
        }
        let values = gather(t, &storages[&t.key]).map_err(|m| bad(path, format!("`{name}`: {m}")))?;
        tensors.push((
            name.clone(),
            Tensor {
                shape: t.size.clone(),
                values,
            },
        ));
    }
    if tensors.is_empty() {
        return Err(bad(path, "no tensors in its state dict"));
    }
    Ok(Checkpoint { tensors, epoch })
}

/// The tensor's elements in row-major order, read through its offset and strides.
fn gather(t: &TensorRef, storage: &[u8]) -> std::result::Result<Vec<f32>, String> {
    let (width, decode): (usize, fn(&[u8]) -> f32) = match t.dtype.as_str() {
        "FloatStorage" => (4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        "DoubleStorage" => (8, |b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
        "HalfStorage" => (2, |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        "BFloat16Storage" => (2, |b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        other => return Err(format!("storage type {other} is not a float type")),
    };
    let n: usize = t.size.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; t.size.len()];
    for _ in 0..n {
        let at = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        let b = storage
            .get(at * width..(at + 1) * width)
            .ok_or_else(|| format!("element {at} is beyond its storage of {} bytes", storage.len()))?;
        out.push(decode(b));
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

/// A pickle machine for protocols 0–5 over the opcodes `torch.save` emits.
struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u64, Value>,
}

type Step<T> = std::result::Result<T, String>;

impl<'a> Machine<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Machine {
            bytes,
            pos: 0,
            stack: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> Step<&'a [u8]> {
        let s = self
            .bytes
            .get(self.pos..self.pos + n)
            .ok_or_else(|| "the pickle ends early".to_string())?;
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Step<u8> {
        Ok(self.take(1)?[0])
    }
    fn le(&mut self, n: usize) -> Step<u64> {
        Ok(self.take(n)?.iter().rev().fold(0u64, |a, &b| (a << 8) | b as u64))
    }
    fn line(&mut self) -> Step<String> {
        let rest = &self.bytes[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("an unterminated text argument")?;
        self.pos += end + 1;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    }
    fn pop(&mut self) -> Step<Value> {
        self.stack.pop().ok_or_else(|| "stack underflow".to_string())
    }
    fn pop_mark(&mut self) -> Step<Vec<Value>> {
        let at = self
            .stack
            .iter()
            .rposition(|v| *v == Value::Mark)
            .ok_or("no mark on the stack")?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }
    fn top(&mut self) -> Step<&mut Value> {
        self.stack.last_mut().ok_or_else(|| "stack underflow".to_string())
    }
    fn text(b: &[u8]) -> Step<Value> {
        Ok(Value::Str(
            String::from_utf8(b.to_vec()).map_err(|_| "a string that is not UTF-8")?,
        ))
    }
    /// The memo holds a copy: containers filled after being memoized are not seen through a later
    /// GET (a state dict's tensors never need that; shared storages go by key).
    fn put(&mut self, id: u64) -> Step<()> {
        let v = self.stack.last().ok_or("stack underflow")?.clone();
        self.memo.insert(id, v);
        Ok(())
    }
    fn get(&mut self, id: u64) -> Step<()> {
        let v = self
            .memo
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("memo {id} was never stored"))?;
        self.stack.push(v);
        Ok(())
    }

    fn run(mut self) -> Step<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?;
                }
                0x95 => {
                    self.le(8)?;
                }
                b'.' => return self.pop(),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                0x8f => self.stack.push(Value::List(Vec::new())),
                b'(' => self.stack.push(Value::Mark),
                b'q' => {
                    let id = self.le(1)?;
                    self.put(id)?
                }
                b'r' => {
                    let id = self.le(4)?;
                    self.put(id)?
                }
                0x94 => {
                    let id = self.memo.len() as u64;
                    self.put(id)?
                }
                b'p' => {
                    let id = self.line()?.parse().map_err(|_| "a bad PUT index")?;
                    self.put(id)?
                }
                b'h' => {
                    let id = self.le(1)?;
                    self.get(id)?
                }
                b'j' => {
                    let id = self.le(4)?;
                    self.get(id)?
                }
                b'g' => {
                    let id = self.line()?.parse().map_err(|_| "a bad GET index")?;
                    self.get(id)?
                }
                b'X' => {
                    let n = self.le(4)? as usize;
                    let v = Self::text(self.take(n)?)?;
                    self.stack.push(v)
                }
                0x8c => {
                    let n = self.le(1)? as usize;
                    let v = Self::text(self.take(n)?)?;
                    self.stack.push(v)
                }
                0x8d => {
                    let n = self.le(8)? as usize;
                    let v = Self::text(self.take(n)?)?;
                    self.stack.push(v)
                }
                b'T' | b'B' => {
                    let n = self.le(4)? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b))
                }
                b'U' | b'C' => {
                    let n = self.le(1)? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b))
                }
                0x8e => {
                    let n = self.le(8)? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b))
                }
                b'J' => {
                    let v = self.le(4)? as u32 as i32 as i64;
                    self.stack.push(Value::Int(v))
                }
                b'K' => {
                    let v = self.le(1)? as i64;
                    self.stack.push(Value::Int(v))
                }
                b'M' => {
                    let v = self.le(2)? as i64;
                    self.stack.push(Value::Int(v))
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { self.le(1)? } else { self.le(4)? } as usize;
                    let b = self.take(n)?;
                    // Little-endian two's complement; wider than 64 bits does not occur in a state dict.
                    let mut v: i64 = 0;
                    for (i, &x) in b.iter().enumerate().take(8) {
                        v |= (x as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v))
                }
                b'I' | b'L' => {
                    let l = self.line()?;
                    let v = match l.trim_end_matches('L') {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        s => Value::Int(s.parse().map_err(|_| format!("a bad INT {s}"))?),
                    };
                    self.stack.push(v)
                }
                b'G' => {
                    let b = self.take(8)?;
                    self.stack
                        .push(Value::Float(f64::from_be_bytes(b.try_into().expect("8 bytes"))))
                }
                b'F' => {
                    let l = self.line()?;
                    self.stack
                        .push(Value::Float(l.parse().map_err(|_| format!("a bad FLOAT {l}"))?))
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items))
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items))
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Dict(pairs(items)?))
                }
                b'a' => {
                    let v = self.pop()?;
                    if let Value::List(l) = self.top()? {
                        l.push(v)
                    }
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    if let Value::List(l) = self.top()? {
                        l.extend(items)
                    }
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items))
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    if let Value::Dict(d) = self.top()? {
                        d.push((k, v))
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let items = pairs(items)?;
                    if let Value::Dict(d) = self.top()? {
                        d.extend(items)
                    }
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(format!("{module}.{name}")))
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(m), Value::Str(n)) = (module, name) else {
                        return Err("STACK_GLOBAL without two strings".into());
                    };
                    self.stack.push(Value::Global(format!("{m}.{n}")))
                }
                b'R' => {
                    let args = self.pop()?;
                    let callee = self.pop()?;
                    self.stack.push(reduce(callee, args)?)
                }
                0x81 => {
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    self.stack.push(Value::Opaque(name_of(&cls)))
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    self.stack.push(Value::Opaque(name_of(&cls)))
                }
                b'b' => {
                    // Object state (`__setstate__`): only opaque objects and dicts get one here,
                    // and neither needs it.
                    self.pop()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(storage(pid)?)
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v)
                }
                other => {
                    return Err(format!(
                        "opcode 0x{other:02x} at byte {} is not supported",
                        self.pos - 1
                    ))
                }
            }
        }
    }
}

fn pairs(items: Vec<Value>) -> Step<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return Err("a dict with an odd number of items".into());
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn name_of(v: &Value) -> String {
    match v {
        Value::Global(g) => g.clone(),
        other => format!("{other:?}"),
    }
}

fn usizes(v: &Value, what: &str) -> Step<Vec<usize>> {
    match v {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                _ => Err(format!("a tensor's {what} is not a tuple of sizes")),
            })
            .collect(),
        _ => Err(format!("a tensor's {what} is not a tuple")),
    }
}

/// Calls a GLOBAL: the few that build containers and tensors; any other is an opaque object.
fn reduce(callee: Value, args: Value) -> Step<Value> {
    let name = name_of(&callee);
    let Value::Tuple(args) = args else {
        return Ok(Value::Opaque(name));
    };
    Ok(match name.as_str() {
        // OrderedDict() and defaultdict(factory): dicts, filled by the SETITEMS that follow.
        "collections.OrderedDict" | "collections.defaultdict" => Value::Dict(Vec::new()),
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
            let (Some(Value::Storage(dtype, key)), Some(Value::Int(offset)), Some(size), Some(stride)) =
                (args.first(), args.get(1), args.get(2), args.get(3))
            else {
                return Err("a _rebuild_tensor call without (storage, offset, size, stride)".into());
            };
            Value::Tensor(TensorRef {
                dtype: dtype.clone(),
                key: key.clone(),
                offset: *offset as usize,
                size: usizes(size, "size")?,
                stride: usizes(stride, "stride")?,
            })
        }
        "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
            args.into_iter().next().unwrap_or(Value::None)
        }
        _ => Value::Opaque(name),
    })
}

/// A persistent id `('storage', torch.<Type>Storage, key, location, numel)`.
fn storage(pid: Value) -> Step<Value> {
    let Value::Tuple(t) = pid else {
        return Err("a persistent id that is not a tuple".into());
    };
    match (t.first(), t.get(1), t.get(2)) {
        (Some(Value::Str(kind)), Some(Value::Global(ty)), Some(Value::Str(key))) if kind == "storage" => {
            let ty = ty.rsplit('.').next().unwrap_or(ty).to_string();
            Ok(Value::Storage(ty, key.clone()))
        }
        _ => Err("a persistent id that is not a storage".into()),
    }
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
