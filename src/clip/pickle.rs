//! A small pickle machine for the two pickles the project reads from outside: `torch.save`'s
//! `data.pkl` (through [`super::torch_zip`]) and CoOp's few-shot files
//! ([`crate::data::fewshot_pkl`]). It builds plain data (containers, strings, numbers), torch's
//! tensor references, and, for any other class, an opaque object with the state a BUILD gives it:
//! reading a file never executes or imports anything it names.
//!
//! A hostile file cannot crash it, and every way it is refused is one error:
//! - Values live in one arena and refer to each other by index, so nothing here recurses (building,
//!   reading or dropping a value): 300,000 nested lists are as harmless as one, and no depth limit
//!   is needed. A memo entry is the same value, not a copy: a memoized dict or list filled after
//!   its PUT reads with its contents through a later GET, as in Python, and no chain of GETs can
//!   expand a small file into a large tree (a "clone bomb" is as small here as in Python).
//! - Every value built, stack slot, mark and memo entry counts against [`MAX_VALUES`], which bounds
//!   the memory a pickle can take whatever it holds; string and byte lengths are checked against
//!   the bytes present before anything is copied.

use std::collections::HashMap;

/// How many values (objects built, references pushed, marks, memo entries) one pickle may make.
/// Real files are far below it: a state dict of 1,000 tensors makes about 20,000, ImageNet's
/// 16-shot file about 400,000. At the limit the arena holds some 500 MB.
const MAX_VALUES: usize = 1 << 23;

/// The largest pickle read into memory (a `data.pkl`, a few-shot file): real ones are a few MB.
pub(crate) const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// A value's index in its [`Pickle`]'s arena.
pub(crate) type Id = u32;

/// One value of a pickle; containers hold their items by [`Id`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits: nothing read here needs its value.
    BigInt,
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    /// Lists, and sets (which nothing read here needs as sets).
    List(Vec<Id>),
    Tuple(Vec<Id>),
    /// Insertion-ordered; keys of any kind (Dassl's optimizer state has integers). A key set twice
    /// appears twice: [`Pickle::get`] reads the last, as Python's dict keeps the later value.
    Dict(Vec<(Id, Id)>),
    /// `module.name` of a GLOBAL not yet called.
    Global(String),
    /// A persistent storage reference: its element type (`FloatStorage`, …) and `data/<key>`.
    Storage {
        dtype: String,
        key: String,
    },
    Tensor(Box<TensorRef>),
    /// An object of a class this machine does not build (optimizers, schedulers, Dassl's `Datum`),
    /// with the state its BUILD set (an object's attributes, as a dict).
    Object {
        class: String,
        state: Option<Id>,
    },
}

/// What `torch._utils._rebuild_tensor_v2` is called with: a view into a storage.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TensorRef {
    pub dtype: String,
    pub key: String,
    pub offset: u64,
    pub size: Vec<u64>,
    pub stride: Vec<u64>,
}

/// A read pickle: its values and the one it returned.
#[derive(Debug)]
pub(crate) struct Pickle {
    nodes: Vec<Node>,
    root: Id,
}

type Step<T> = std::result::Result<T, String>;

impl Pickle {
    /// Runs the pickle in `bytes` under the [`MAX_VALUES`] bound.
    pub(crate) fn parse(bytes: &[u8]) -> Step<Pickle> {
        Machine::new(bytes, MAX_VALUES).run()
    }

    pub(crate) fn root(&self) -> &Node {
        self.node(self.root)
    }

    pub(crate) fn node(&self, id: Id) -> &Node {
        &self.nodes[id as usize]
    }

    /// The string `id` holds, if it is one.
    pub(crate) fn str(&self, id: Id) -> Option<&str> {
        match self.node(id) {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value under string key `key`: the last such entry, as a later SETITEM overwrites in Python.
    pub(crate) fn get(&self, dict: &[(Id, Id)], key: &str) -> Option<&Node> {
        dict.iter()
            .rev()
            .find(|(k, _)| self.str(*k) == Some(key))
            .map(|(_, v)| self.node(*v))
    }

    /// The entries of a dict, or of an object's attribute dict (its BUILD state).
    pub(crate) fn attrs<'p>(&'p self, node: &'p Node) -> Option<&'p [(Id, Id)]> {
        match node {
            Node::Dict(d) => Some(d),
            Node::Object { state: Some(s), .. } => match self.node(*s) {
                Node::Dict(d) => Some(d),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The pickle virtual machine (protocols 0–5, the opcodes CPython's pickler emits for plain data and
/// objects), with Python's stack discipline: a MARK opens a frame that only POP_MARK and the
/// container opcodes close.
struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    nodes: Vec<Node>,
    stack: Vec<Id>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u64, Id>,
    /// Values this pickle may still make.
    budget: usize,
    limit: usize,
}

impl<'a> Machine<'a> {
    fn new(bytes: &'a [u8], limit: usize) -> Self {
        Machine {
            bytes,
            pos: 0,
            nodes: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            budget: limit,
            limit,
        }
    }

    /// Counts one value against the budget.
    fn charge(&mut self) -> Step<()> {
        self.budget = self.budget.checked_sub(1).ok_or_else(|| {
            format!(
                "the pickle makes more than {} values (this reader's limit, which bounds its memory)",
                self.limit
            )
        })?;
        Ok(())
    }

    fn new_node(&mut self, n: Node) -> Step<Id> {
        self.charge()?;
        let id = self.nodes.len() as Id;
        self.nodes.push(n);
        Ok(id)
    }

    fn push(&mut self, id: Id) -> Step<()> {
        self.charge()?;
        self.stack.push(id);
        Ok(())
    }

    fn push_new(&mut self, n: Node) -> Step<()> {
        let id = self.new_node(n)?;
        self.stack.push(id);
        Ok(())
    }

    fn take(&mut self, n: usize) -> Step<&'a [u8]> {
        let s = self
            .bytes
            .get(self.pos..)
            .and_then(|rest| rest.get(..n))
            .ok_or_else(|| format!("the pickle ends early (at byte {} of {})", self.pos, self.bytes.len()))?;
        self.pos += n;
        Ok(s)
    }
    /// `n` bytes of a length-prefixed argument, checked against what is left before anything is
    /// copied (a hostile prefix claims up to 2^64 − 1).
    fn sized(&mut self, n: u64) -> Step<&'a [u8]> {
        match usize::try_from(n) {
            Ok(n) if n <= self.bytes.len() - self.pos => self.take(n),
            _ => Err(format!(
                "a length of {n} bytes at byte {} runs past the end of the pickle ({} bytes)",
                self.pos,
                self.bytes.len()
            )),
        }
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
    /// Where the innermost open frame starts on the stack.
    fn base(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }
    fn pop(&mut self) -> Step<Id> {
        if self.stack.len() <= self.base() {
            return Err("stack underflow".into());
        }
        Ok(self.stack.pop().expect("above the frame's base"))
    }
    fn pop_mark(&mut self) -> Step<Vec<Id>> {
        let at = self.marks.pop().ok_or("no mark on the stack")?;
        Ok(self.stack.split_off(at))
    }
    fn top(&self) -> Step<Id> {
        if self.stack.len() <= self.base() {
            return Err("stack underflow".into());
        }
        Ok(*self.stack.last().expect("above the frame's base"))
    }
    fn text(&mut self, n: u64) -> Step<()> {
        let b = self.sized(n)?;
        let s = std::str::from_utf8(b).map_err(|_| "a string that is not UTF-8")?;
        self.push_new(Node::Str(s.to_string()))
    }
    fn bytes_of(&mut self, n: u64) -> Step<()> {
        let b = self.sized(n)?.to_vec();
        self.push_new(Node::Bytes(b))
    }
    fn put(&mut self, key: u64) -> Step<()> {
        let id = self.top()?;
        self.charge()?;
        self.memo.insert(key, id);
        Ok(())
    }
    fn get(&mut self, key: u64) -> Step<()> {
        let id = *self
            .memo
            .get(&key)
            .ok_or_else(|| format!("memo {key} was never stored"))?;
        self.push(id)
    }
    fn name_of(&self, id: Id) -> String {
        match self.node(id) {
            Node::Global(g) => g.clone(),
            _ => "an object called through a value that is not a class".into(),
        }
    }
    fn node(&self, id: Id) -> &Node {
        &self.nodes[id as usize]
    }
    /// APPEND/APPENDS/ADDITEMS: into a list; an opaque object's items are dropped (nothing read
    /// here needs them), and any other target is a broken pickle.
    fn extend_list(&mut self, items: Vec<Id>) -> Step<()> {
        let target = self.top()?;
        match &mut self.nodes[target as usize] {
            Node::List(l) => l.extend(items),
            Node::Object { .. } => {}
            _ => return Err("APPEND to a value that is not a list".into()),
        }
        Ok(())
    }
    /// SETITEM/SETITEMS, as [`Self::extend_list`] for dicts.
    fn extend_dict(&mut self, items: Vec<Id>) -> Step<()> {
        let pairs = pairs(items)?;
        let target = self.top()?;
        match &mut self.nodes[target as usize] {
            Node::Dict(d) => d.extend(pairs),
            Node::Object { .. } => {}
            _ => return Err("SETITEM on a value that is not a dict".into()),
        }
        Ok(())
    }

    fn run(mut self) -> Step<Pickle> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?;
                }
                0x95 => {
                    self.le(8)?;
                }
                b'.' => {
                    let root = self.pop()?;
                    return Ok(Pickle {
                        nodes: self.nodes,
                        root,
                    });
                }
                b'}' => self.push_new(Node::Dict(Vec::new()))?,
                b']' | 0x8f => self.push_new(Node::List(Vec::new()))?,
                b')' => self.push_new(Node::Tuple(Vec::new()))?,
                b'(' => {
                    self.charge()?;
                    self.marks.push(self.stack.len());
                }
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
                    let n = self.le(4)?;
                    self.text(n)?
                }
                0x8c => {
                    let n = self.le(1)?;
                    self.text(n)?
                }
                0x8d => {
                    let n = self.le(8)?;
                    self.text(n)?
                }
                b'T' | b'B' => {
                    let n = self.le(4)?;
                    self.bytes_of(n)?
                }
                b'U' | b'C' => {
                    let n = self.le(1)?;
                    self.bytes_of(n)?
                }
                0x8e | 0x96 => {
                    let n = self.le(8)?;
                    self.bytes_of(n)?
                }
                b'J' => {
                    let v = self.le(4)? as u32 as i32 as i64;
                    self.push_new(Node::Int(v))?
                }
                b'K' => {
                    let v = self.le(1)? as i64;
                    self.push_new(Node::Int(v))?
                }
                b'M' => {
                    let v = self.le(2)? as i64;
                    self.push_new(Node::Int(v))?
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { self.le(1)? } else { self.le(4)? };
                    let b = self.sized(n)?;
                    self.push_new(long(b))?
                }
                b'I' | b'L' => {
                    let l = self.line()?;
                    let v = match l.trim_end_matches('L') {
                        "00" => Node::Bool(false),
                        "01" => Node::Bool(true),
                        s => Node::Int(s.parse().map_err(|_| format!("a bad INT {s}"))?),
                    };
                    self.push_new(v)?
                }
                b'G' => {
                    let b = self.take(8)?;
                    let v = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                    self.push_new(Node::Float(v))?
                }
                b'F' => {
                    let l = self.line()?;
                    let v = l.parse().map_err(|_| format!("a bad FLOAT {l}"))?;
                    self.push_new(Node::Float(v))?
                }
                b'N' => self.push_new(Node::None)?,
                0x88 => self.push_new(Node::Bool(true))?,
                0x89 => self.push_new(Node::Bool(false))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_new(Node::Tuple(items))?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < self.base() + n {
                        return Err("stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_new(Node::Tuple(items))?
                }
                b'l' | 0x91 => {
                    let items = self.pop_mark()?;
                    self.push_new(Node::List(items))?
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = pairs(items)?;
                    self.push_new(Node::Dict(d))?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_list(vec![v])?
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    self.extend_list(items)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.extend_dict(vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.extend_dict(items)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push_new(Node::Global(format!("{module}.{name}")))?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Node::Str(m), Node::Str(n)) = (self.node(module), self.node(name)) else {
                        return Err("STACK_GLOBAL without two strings".into());
                    };
                    let g = Node::Global(format!("{m}.{n}"));
                    self.push_new(g)?
                }
                b'R' => {
                    let args = self.pop()?;
                    let callee = self.pop()?;
                    let v = self.reduce(callee, args)?;
                    self.push(v)?
                }
                0x81 => {
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.instance(self.name_of(cls))?;
                    self.push(v)?
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.instance(self.name_of(cls))?;
                    self.push(v)?
                }
                b'b' => {
                    // `__setstate__`: an opaque object keeps its state (a Datum's attributes); a dict's
                    // (an OrderedDict's `_metadata`) and anything else's is not needed.
                    let state = self.pop()?;
                    let target = self.top()?;
                    if let Node::Object { state: s, .. } = &mut self.nodes[target as usize] {
                        *s = Some(state);
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let s = self.storage(pid)?;
                    self.push_new(s)?
                }
                b'0' => {
                    // Python's POP: the top item, or, in an empty frame, the frame's mark.
                    if self.stack.len() > self.base() {
                        self.stack.pop();
                    } else {
                        self.pop_mark()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?;
                    self.push(v)?
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

    /// A new object of class `name`: the dict classes state dicts use are dicts (filled by the
    /// SETITEMS that follow); any other class is opaque.
    fn instance(&mut self, name: String) -> Step<Id> {
        match name.as_str() {
            "collections.OrderedDict" | "collections.defaultdict" => self.new_node(Node::Dict(Vec::new())),
            _ => self.new_node(Node::Object {
                class: name,
                state: None,
            }),
        }
    }

    /// Calls a GLOBAL: the few that build containers and tensors; any other is an opaque object.
    fn reduce(&mut self, callee: Id, args: Id) -> Step<Id> {
        let name = self.name_of(callee);
        let Node::Tuple(a) = self.node(args) else {
            return self.instance(name);
        };
        let a = a.clone();
        match name.as_str() {
            "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
                let arg = |i: usize| a.get(i).map(|&id| self.node(id));
                let (Some(Node::Storage { dtype, key }), Some(Node::Int(offset)), Some(size), Some(stride)) =
                    (arg(0), arg(1), arg(2), arg(3))
                else {
                    return Err("a _rebuild_tensor call without (storage, offset, size, stride)".into());
                };
                let t = TensorRef {
                    dtype: dtype.clone(),
                    key: key.clone(),
                    offset: u64::try_from(*offset).map_err(|_| format!("a tensor's offset {offset} is negative"))?,
                    size: self.sizes(size, "size")?,
                    stride: self.sizes(stride, "stride")?,
                };
                self.new_node(Node::Tensor(Box::new(t)))
            }
            // The parameter is its tensor (the same value, not a copy).
            "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => match a.first() {
                Some(&t) => Ok(t),
                None => self.new_node(Node::None),
            },
            // Protocols 0 and 1 build a plain object as `_reconstructor(cls, base, state)`.
            "copy_reg._reconstructor" | "copyreg._reconstructor" => match a.first() {
                Some(&cls) => {
                    let n = self.name_of(cls);
                    self.instance(n)
                }
                None => self.instance(name),
            },
            _ => self.instance(name),
        }
    }

    fn sizes(&self, v: &Node, what: &str) -> Step<Vec<u64>> {
        match v {
            Node::Tuple(items) | Node::List(items) => items
                .iter()
                .map(|&x| match self.node(x) {
                    Node::Int(i) if *i >= 0 => Ok(*i as u64),
                    _ => Err(format!("a tensor's {what} is not a tuple of non-negative integers")),
                })
                .collect(),
            _ => Err(format!("a tensor's {what} is not a tuple")),
        }
    }

    /// A persistent id `('storage', torch.<Type>Storage, key, location, numel)`.
    fn storage(&self, pid: Id) -> Step<Node> {
        let Node::Tuple(t) = self.node(pid) else {
            return Err("a persistent id that is not a tuple".into());
        };
        let at = |i: usize| t.get(i).map(|&id| self.node(id));
        match (at(0), at(1), at(2)) {
            (Some(Node::Str(kind)), Some(Node::Global(ty)), Some(Node::Str(key))) if kind == "storage" => {
                Ok(Node::Storage {
                    dtype: ty.rsplit('.').next().unwrap_or(ty).to_string(),
                    key: key.clone(),
                })
            }
            _ => Err("a persistent id that is not a storage".into()),
        }
    }
}

/// LONG1/LONG4's little-endian two's complement.
fn long(b: &[u8]) -> Node {
    let n = b.len();
    let mut v: i64 = 0;
    for (i, &x) in b.iter().enumerate().take(8) {
        v |= (x as i64) << (8 * i);
    }
    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
        v -= 1i64 << (8 * n);
    }
    // Wider than 8 bytes: still an i64 when the rest is only the sign's extension.
    let sign = if v < 0 { 0xFF } else { 0x00 };
    if n > 8 && b[8..].iter().any(|&x| x != sign) {
        return Node::BigInt;
    }
    Node::Int(v)
}

fn pairs(items: Vec<Id>) -> Step<Vec<(Id, Id)>> {
    if !items.len().is_multiple_of(2) {
        return Err("a dict with an odd number of items".into());
    }
    Ok(items.chunks_exact(2).map(|p| (p[0], p[1])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protocol 2 header, `ops`, STOP.
    fn pickle(ops: &[u8]) -> Vec<u8> {
        let mut b = vec![0x80, 2];
        b.extend_from_slice(ops);
        b.push(b'.');
        b
    }

    fn short_str(s: &str) -> Vec<u8> {
        let mut b = vec![0x8c, s.len() as u8];
        b.extend_from_slice(s.as_bytes());
        b
    }

    #[test]
    fn three_hundred_thousand_nested_lists_build_and_drop_without_recursion() {
        const N: usize = 300_000;
        // EMPTY_LIST × N, then APPEND × (N − 1): each list goes into the one below it.
        let mut ops = vec![b']'; N];
        ops.extend(std::iter::repeat_n(b'a', N - 1));
        let p = Pickle::parse(&pickle(&ops)).unwrap();
        let Node::List(items) = p.root() else {
            panic!("{:?}", p.root())
        };
        assert_eq!(items.len(), 1);
        drop(p);
        // MARK × N, then LIST × N: each list holds the one the LIST before it built.
        let mut ops = vec![b'('; N];
        ops.extend(std::iter::repeat_n(b'l', N));
        let p = Pickle::parse(&pickle(&ops)).unwrap();
        // Walked to the bottom iteratively: N levels, the innermost empty.
        let (mut node, mut depth) = (p.root(), 1);
        while let Node::List(items) = node {
            match items.as_slice() {
                [] => break,
                [inner] => (node, depth) = (p.node(*inner), depth + 1),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(depth, N);
    }

    #[test]
    fn a_memo_chain_that_would_expand_to_a_terabyte_stays_small() {
        // L0 = [], L(i+1) = [Li, Li] forty times over: 2^40 leaves as a tree, 41 lists as Python
        // (and this arena) hold it.
        let mut ops = vec![b']', b'q', 0];
        for i in 0..40u8 {
            ops.extend([b'(', b'h', i, b'h', i, b'l', b'q', i + 1]);
        }
        let p = Pickle::parse(&pickle(&ops)).unwrap();
        assert!(p.nodes.len() < 50, "{} nodes", p.nodes.len());
        let Node::List(top) = p.root() else { panic!() };
        assert_eq!(top.len(), 2);
        assert_eq!(top[0], top[1], "both halves are one list, not copies");
    }

    #[test]
    fn a_dict_filled_after_its_put_reads_with_its_contents_through_a_get() {
        // MARK, {} PUT 0, MARK "k" 1 SETITEMS, GET 0, TUPLE: Python reads ({'k': 1}, {'k': 1}).
        let mut ops = vec![b'(', b'}', b'q', 0, b'('];
        ops.extend(short_str("k"));
        ops.extend([b'K', 1, b'u', b'h', 0, b't']);
        let p = Pickle::parse(&pickle(&ops)).unwrap();
        let Node::Tuple(t) = p.root() else { panic!() };
        assert_eq!(t.len(), 2);
        for &d in t {
            let Node::Dict(entries) = p.node(d) else { panic!() };
            assert_eq!(p.get(entries, "k"), Some(&Node::Int(1)));
        }
        // The same for a list filled by APPENDS after its MEMOIZE.
        let ops = [b'(', b']', 0x94, b'(', b'K', 7, b'K', 8, b'e', b'h', 0, b't'];
        let p = Pickle::parse(&pickle(&ops)).unwrap();
        let Node::Tuple(t) = p.root() else { panic!() };
        let Node::List(l) = p.node(t[1]) else { panic!() };
        assert_eq!(
            l.iter().map(|&i| p.node(i).clone()).collect::<Vec<_>>(),
            [Node::Int(7), Node::Int(8)]
        );
    }

    #[test]
    fn a_later_setitem_overwrites_as_in_python() {
        let mut ops = vec![b'}', b'('];
        ops.extend(short_str("k"));
        ops.extend([b'K', 1]);
        ops.extend(short_str("k"));
        ops.extend([b'K', 2, b'u']);
        let p = Pickle::parse(&pickle(&ops)).unwrap();
        assert_eq!(p.get(p.attrs(p.root()).unwrap(), "k"), Some(&Node::Int(2)));
    }

    #[test]
    fn a_huge_length_prefix_is_refused_before_anything_is_allocated() {
        for ops in [
            // BINUNICODE8 and BINBYTES8 claiming 2^64 − 1 bytes (where pos + n overflowed), and
            // BINUNICODE / LONG4 claiming 4 GB of a 20-byte file.
            vec![0x8d, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            vec![0x8e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            vec![b'X', 0xff, 0xff, 0xff, 0xff, b'a'],
            vec![0x8b, 0xff, 0xff, 0xff, 0xff],
        ] {
            let e = Pickle::parse(&pickle(&ops)).unwrap_err();
            assert!(e.contains("runs past the end of the pickle"), "{e}");
        }
    }

    #[test]
    fn the_value_budget_bounds_what_a_pickle_can_make() {
        // Each DUP pushes one more reference: without a bound, memory grows with every byte.
        let mut ops = vec![b']'];
        ops.extend(std::iter::repeat_n(b'2', 1000));
        let e = Machine::new(&pickle(&ops), 500).run().unwrap_err();
        assert_eq!(
            e,
            "the pickle makes more than 500 values (this reader's limit, which bounds its memory)"
        );
        // The same under the real limit reads (the stack's last item).
        assert!(Pickle::parse(&pickle(&ops)).is_ok());
    }

    #[test]
    fn a_broken_stack_is_an_error_not_a_panic() {
        for (ops, want) in [
            (&b"a"[..], "stack underflow"),
            (b"(a", "stack underflow"),
            (b"K\x01K\x02(\x86", "stack underflow"),
            (b"t", "no mark on the stack"),
            (b"K\x01K\x02a", "APPEND to a value that is not a list"),
            (b"K\x01(K\x02a", "stack underflow"),
            (b"](K\x01u", "a dict with an odd number of items"),
            (b"h\x05", "memo 5 was never stored"),
            (b"\xff", "opcode 0xff at byte 2 is not supported"),
        ] {
            let e = Pickle::parse(&pickle(ops)).unwrap_err();
            assert!(e.contains(want), "{ops:?}: {e}");
        }
        assert_eq!(
            Pickle::parse(b"\x80\x02").unwrap_err(),
            "the pickle ends early (at byte 2 of 2)"
        );
    }

    #[test]
    fn long_integers_read_as_python_reads_them() {
        assert_eq!(long(&[0xff]), Node::Int(-1));
        assert_eq!(long(&[0x00, 0x80]), Node::Int(-32768));
        assert_eq!(long(&[0xff; 12]), Node::Int(-1));
        assert_eq!(long(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), Node::BigInt);
        assert_eq!(long(&[]), Node::Int(0));
    }

    #[test]
    fn an_object_keeps_its_build_state_as_its_attributes() {
        // Protocol 2's Datum: STACK_GLOBAL, EMPTY_TUPLE, NEWOBJ, {…} BUILD.
        let mut ops = short_str("m");
        ops.extend(short_str("Datum"));
        ops.extend([0x93, b')', 0x81, b'}', b'(']);
        ops.extend(short_str("_label"));
        ops.extend([b'K', 3, b'u', b'b']);
        let p = Pickle::parse(&pickle(&ops)).unwrap();
        assert!(matches!(p.root(), Node::Object { class, .. } if class == "m.Datum"));
        assert_eq!(p.get(p.attrs(p.root()).unwrap(), "_label"), Some(&Node::Int(3)));
    }
}
