//! Writes a scheduled [`Program`] as one inline-assembly block: registers
//! allocated in the schedule's order, 32 vector registers, spilling the
//! value whose next use is furthest away (Belady's rule) when none is free.
//!
//! Inputs live in their argument arrays, so dropping one from a register
//! costs nothing and a multiply-add reads its second factor straight from
//! memory. Computed values that must leave a register go to a spill area on
//! the stack. The block's outputs are stored to the result array.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;

use super::program::{Op, Operand, Program, Value};

/// Vector registers the allocator hands out.
const REGISTERS: usize = 32;

/// Where a value can be read from besides a register.
#[derive(Clone, Copy)]
enum Home {
    /// Its argument array (inputs).
    Input(&'static str, usize),
    /// Slot `n` of the spill area.
    Spill(usize),
}

impl Home {
    /// The memory operand that reads it.
    fn address(self) -> String {
        match self {
            Home::Input(array, index) => format!("zmmword ptr [{{{array}}} + {}]", 64 * index),
            Home::Spill(slot) => format!("zmmword ptr [{{spill}} + {}]", 64 * slot),
        }
    }
}

/// The allocator's state while it walks the schedule.
struct Allocator {
    /// Positions (in schedule order) where each value is still read.
    uses: HashMap<Value, VecDeque<usize>>,
    /// The value each register holds.
    holds: [Option<Value>; REGISTERS],
    /// The register each value is in, if any.
    register: HashMap<Value, usize>,
    /// The memory copy of each value that has one.
    home: HashMap<Value, Home>,
    /// Spill slots no longer needed.
    free_slots: Vec<usize>,
    /// Spill slots ever used: the spill area's size.
    slots: usize,
    /// The assembly written so far.
    lines: Vec<String>,
}

impl Allocator {
    /// The next position at which `value` is read, if it ever is again.
    fn next_use(&self, value: Value) -> Option<usize> {
        self.uses.get(&value).and_then(|uses| uses.front().copied())
    }

    /// A free register, evicting the value read furthest in the future
    /// (never pinned ones); a computed value without a memory copy is
    /// spilled first.
    fn take_register(&mut self, pinned: &[usize]) -> usize {
        if let Some(free) = (0..REGISTERS).find(|r| self.holds[*r].is_none() && !pinned.contains(r))
        {
            return free;
        }
        let victim = (0..REGISTERS)
            .filter(|r| !pinned.contains(r))
            .max_by_key(|&r| self.next_use(self.holds[r].unwrap()).unwrap_or(usize::MAX))
            .expect("an unpinned register");
        let value = self.holds[victim].take().unwrap();
        self.register.remove(&value);
        if !self.home.contains_key(&value) {
            let slot = self.free_slots.pop().unwrap_or_else(|| {
                self.slots += 1;
                self.slots - 1
            });
            self.home.insert(value, Home::Spill(slot));
            self.lines.push(format!(
                "vmovdqu64 {}, zmm{victim}",
                Home::Spill(slot).address()
            ));
        }
        victim
    }

    /// Puts `value` in a register (loading it if it is only in memory).
    fn in_register(&mut self, value: Value, pinned: &[usize]) -> usize {
        if let Some(&r) = self.register.get(&value) {
            return r;
        }
        let r = self.take_register(pinned);
        self.lines
            .push(format!("vmovdqu64 zmm{r}, {}", self.home[&value].address()));
        self.place(value, r);
        r
    }

    /// Records that register `r` now holds `value`.
    fn place(&mut self, value: Value, r: usize) {
        self.holds[r] = Some(value);
        self.register.insert(value, r);
    }

    /// Register name, or memory operand, for reading `value` as an
    /// instruction's last source.
    fn source(&self, value: Value) -> String {
        match self.register.get(&value) {
            Some(r) => format!("zmm{r}"),
            None => self.home[&value].address(),
        }
    }

    /// Drops the use at `position` of each value read there, freeing the
    /// register and spill slot of values never read again.
    fn retire(&mut self, reads: &[Value], position: usize) {
        for &value in reads {
            let uses = self.uses.get_mut(&value).expect("a read value has uses");
            if uses.front() == Some(&position) {
                uses.pop_front();
            }
            if uses.is_empty() {
                if let Some(r) = self.register.remove(&value) {
                    self.holds[r] = None;
                }
                if let Some(Home::Spill(slot)) = self.home.remove(&value) {
                    self.free_slots.push(slot);
                }
            }
        }
    }
}

/// Assembly for `program` run in `order`, storing `outputs` to the array
/// `{result}`; returns the lines and the spill area's size in vectors.
pub fn assemble(program: &Program, order: &[usize], outputs: &[Value]) -> (Vec<String>, usize) {
    let mut uses: HashMap<Value, VecDeque<usize>> = HashMap::new();
    for (position, &id) in order.iter().enumerate() {
        for value in program.instructions[id].reads() {
            let entry = uses.entry(value).or_default();
            if entry.back() != Some(&position) {
                entry.push_back(position);
            }
        }
    }
    for &value in outputs {
        uses.entry(value).or_default().push_back(order.len());
    }
    let home = uses
        .keys()
        .filter_map(|&value| match value {
            Value::Input(array, index) => Some((value, Home::Input(array, index))),
            Value::Computed(_) => None,
        })
        .collect();
    let mut a = Allocator {
        uses,
        holds: [None; REGISTERS],
        register: HashMap::new(),
        home,
        free_slots: Vec::new(),
        slots: 0,
        lines: Vec::new(),
    };
    for (position, &id) in order.iter().enumerate() {
        let instruction = program.instructions[id];
        let mut pinned = Vec::new();
        let receiver = match instruction.receiver {
            Operand::Value(v) => {
                let r = a.in_register(v, &pinned);
                pinned.push(r);
                Some((v, r))
            }
            Operand::Zero => None,
        };
        // A multiply-add's factors commute: the one already in a register
        // goes first, the other may come from memory.
        let factors = match instruction.op {
            Op::MaddLo(x, y) | Op::MaddHi(x, y) => {
                let (first, second) = if a.register.contains_key(&x) || !a.register.contains_key(&y)
                {
                    (x, y)
                } else {
                    (y, x)
                };
                let r = a.in_register(first, &pinned);
                pinned.push(r);
                Some((r, second))
            }
            _ => None,
        };
        let reads = instruction.reads();
        // The result overwrites the receiver's register when this was the
        // receiver's last read; otherwise it takes a register of its own.
        let receiver_dies = receiver.is_some_and(|(v, _)| {
            a.uses[&v].iter().take_while(|&&p| p <= position).count() == a.uses[&v].len()
        });
        let destination = match receiver {
            Some((_, r)) if receiver_dies => r,
            _ => a.take_register(&pinned),
        };
        let d = format!("zmm{destination}");
        match (instruction.op, receiver) {
            (Op::MaddLo(..) | Op::MaddHi(..), _) => {
                let (first, second) = factors.unwrap();
                match receiver {
                    None => a.lines.push(format!("vpxord {d}, {d}, {d}")),
                    Some((_, r)) if r != destination => {
                        a.lines.push(format!("vmovdqa64 {d}, zmm{r}"))
                    }
                    Some(_) => {}
                }
                let mnemonic = if matches!(instruction.op, Op::MaddLo(..)) {
                    "vpmadd52luq"
                } else {
                    "vpmadd52huq"
                };
                a.lines
                    .push(format!("{mnemonic} {d}, zmm{first}, {}", a.source(second)));
            }
            (Op::Add(x), Some((_, r))) => {
                a.lines.push(format!("vpaddq {d}, zmm{r}, {}", a.source(x)))
            }
            (Op::And(x), Some((_, r))) => {
                a.lines.push(format!("vpandq {d}, zmm{r}, {}", a.source(x)))
            }
            (Op::Carry, Some((_, r))) => a.lines.push(format!("vpsraq {d}, zmm{r}, 52")),
            (Op::Double, Some((_, r))) => a.lines.push(format!("vpaddq {d}, zmm{r}, zmm{r}")),
            (op, None) => panic!("{op:?} needs a receiver"),
        }
        if let Some((v, r)) = receiver {
            if r == destination {
                a.holds[r] = None;
                a.register.remove(&v);
            }
        }
        a.retire(&reads, position);
        a.place(Value::Computed(id), destination);
    }
    for (j, &value) in outputs.iter().enumerate() {
        let r = a.in_register(value, &[]);
        a.lines.push(format!(
            "vmovdqu64 zmmword ptr [{{result}} + {}], zmm{r}",
            64 * j
        ));
    }
    // Spilled intermediates are secret: overwrite them before returning.
    if a.slots > 0 {
        a.lines.push("vpxord zmm0, zmm0, zmm0".into());
        for slot in 0..a.slots {
            a.lines
                .push(format!("vmovdqu64 {}, zmm0", Home::Spill(slot).address()));
        }
    }
    (a.lines, a.slots)
}

/// Writes a function body running `lines` with `arrays` as pointer
/// operands, returning the `n`-element result array.
pub fn function_body(out: &mut String, lines: &[String], slots: usize, arrays: &[&str], n: usize) {
    writeln!(
        out,
        "    let mut result = core::mem::MaybeUninit::<[Lanes; {n}]>::uninit();"
    )
    .unwrap();
    if slots > 0 {
        writeln!(
            out,
            "    let mut spill = core::mem::MaybeUninit::<[Lanes; {slots}]>::uninit();"
        )
        .unwrap();
    }
    writeln!(
        out,
        "    // SAFETY: the block reads only the argument arrays within their lengths, writes only"
    )
    .unwrap();
    writeln!(out, "    // `spill` and every element of `result`, and declares every vector register clobbered.").unwrap();
    writeln!(out, "    unsafe {{\n        core::arch::asm!(").unwrap();
    for line in lines {
        writeln!(out, "            \"{line}\",").unwrap();
    }
    for array in arrays {
        writeln!(out, "            {array} = in(reg) {array}.as_ptr(),").unwrap();
    }
    writeln!(out, "            result = in(reg) result.as_mut_ptr(),").unwrap();
    if slots > 0 {
        writeln!(out, "            spill = in(reg) spill.as_mut_ptr(),").unwrap();
    }
    for r in 0..REGISTERS {
        writeln!(out, "            out(\"zmm{r}\") _,").unwrap();
    }
    writeln!(
        out,
        "            options(nostack),\n        );\n        result.assume_init()\n    }}"
    )
    .unwrap();
}
