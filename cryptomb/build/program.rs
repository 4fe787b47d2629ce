//! A straight-line program over eight-lane vectors, and the order a
//! two-port vector core would issue it in.
//!
//! Why: a Montgomery multiplication is some 1,600 multiply-adds tied
//! together by one short serial chain (each row's quotient digit). Listed
//! row by row, the core's scheduler fills with instructions waiting on that
//! chain while ready work sits behind them, and it retires about one
//! multiply-add per cycle where its two ports take two. A greedy
//! critical-path-first list schedule (multiply-adds 4 cycles, the rest 1,
//! two issued per cycle) puts ready work first. The compiler would reorder
//! Rust code for register pressure and undo that, so [`super::assemble`]
//! writes the scheduled program as assembly.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A vector the program reads or computes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Value {
    /// The result of the program's instruction with this index.
    Computed(usize),
    /// Element `index` of the argument array `array` (64 bytes each).
    Input(&'static str, usize),
}

/// An instruction's accumulator or first input: a value or all-zero lanes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Operand {
    /// A value.
    Value(Value),
    /// All lanes zero.
    Zero,
}

/// What an instruction computes, per lane.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    /// `receiver + low52(x·y)`.
    MaddLo(Value, Value),
    /// `receiver + high52(x·y)`.
    MaddHi(Value, Value),
    /// `receiver + x`.
    Add(Value),
    /// `receiver & x`: with the limb mask, an accumulator's limb part.
    And(Value),
    /// `receiver >> 52`, arithmetic: the carry an accumulator passes on.
    Carry,
    /// `receiver · 2`.
    Double,
}

/// One instruction: `op` applied to `receiver`.
#[derive(Clone, Copy, Debug)]
pub struct Instruction {
    /// The accumulator (or the only input, for `Carry` and `Double`).
    pub receiver: Operand,
    /// The operation.
    pub op: Op,
}

impl Instruction {
    /// Cycles until the result can be used.
    fn latency(&self) -> u32 {
        match self.op {
            Op::MaddLo(..) | Op::MaddHi(..) => 4,
            Op::Add(_) | Op::And(_) | Op::Carry | Op::Double => 1,
        }
    }

    /// Every value the instruction reads, receiver first.
    pub fn reads(&self) -> Vec<Value> {
        let mut values = Vec::with_capacity(3);
        if let Operand::Value(v) = self.receiver {
            values.push(v);
        }
        match self.op {
            Op::MaddLo(x, y) | Op::MaddHi(x, y) => values.extend([x, y]),
            Op::Add(x) | Op::And(x) => values.push(x),
            Op::Carry | Op::Double => {}
        }
        values
    }
}

/// The program being built; instructions only read earlier ones, so the
/// push order is already a valid (if slow) order.
#[derive(Default)]
pub struct Program {
    /// Instructions in push order; `Value::Computed(i)` is the `i`-th.
    pub instructions: Vec<Instruction>,
}

impl Program {
    /// Appends `op` on `receiver` and returns its result.
    pub fn push(&mut self, receiver: Operand, op: Op) -> Operand {
        self.instructions.push(Instruction { receiver, op });
        Operand::Value(Value::Computed(self.instructions.len() - 1))
    }

    /// `accumulator + low52(x·y)`.
    pub fn madd_lo(&mut self, accumulator: Operand, x: Value, y: Value) -> Operand {
        self.push(accumulator, Op::MaddLo(x, y))
    }

    /// `accumulator + high52(x·y)`.
    pub fn madd_hi(&mut self, accumulator: Operand, x: Value, y: Value) -> Operand {
        self.push(accumulator, Op::MaddHi(x, y))
    }

    /// The computed values instruction `id` reads, each once.
    fn computed_reads(&self, id: usize) -> Vec<usize> {
        let mut reads: Vec<usize> = self.instructions[id]
            .reads()
            .into_iter()
            .filter_map(|value| match value {
                Value::Computed(producer) => Some(producer),
                Value::Input(..) => None,
            })
            .collect();
        reads.dedup();
        reads
    }

    /// Issue order of a list schedule on two ports: each cycle, the (at
    /// most two) ready instructions with the longest latency path to the
    /// end of the program go first.
    pub fn schedule(&self) -> Vec<usize> {
        let count = self.instructions.len();
        let mut consumers = vec![Vec::new(); count];
        let mut waiting_on = vec![0usize; count];
        for (id, waiting) in waiting_on.iter_mut().enumerate() {
            for producer in self.computed_reads(id) {
                consumers[producer].push(id);
                *waiting += 1;
            }
        }
        let mut priority = vec![0u32; count];
        for id in (0..count).rev() {
            let tail = consumers[id].iter().map(|&c| priority[c]).max();
            priority[id] = self.instructions[id].latency() + tail.unwrap_or(0);
        }
        let mut ready_at = vec![0u32; count];
        // Instructions whose inputs are issued, by the cycle those are ready.
        let mut pending: BinaryHeap<Reverse<(u32, usize)>> = (0..count)
            .filter(|&id| waiting_on[id] == 0)
            .map(|id| Reverse((0, id)))
            .collect();
        // Instructions that could issue now, most critical first.
        let mut ready: BinaryHeap<(u32, Reverse<usize>)> = BinaryHeap::new();
        let mut order = Vec::with_capacity(count);
        let mut cycle = 0;
        while order.len() < count {
            while let Some(&Reverse((at, id))) = pending.peek() {
                if at > cycle {
                    break;
                }
                pending.pop();
                ready.push((priority[id], Reverse(id)));
            }
            for _ in 0..2 {
                let Some((_, Reverse(id))) = ready.pop() else {
                    break;
                };
                order.push(id);
                let done = cycle + self.instructions[id].latency();
                for &consumer in &consumers[id] {
                    ready_at[consumer] = ready_at[consumer].max(done);
                    waiting_on[consumer] -= 1;
                    if waiting_on[consumer] == 0 {
                        pending.push(Reverse((ready_at[consumer], consumer)));
                    }
                }
            }
            cycle += 1;
        }
        order
    }
}
