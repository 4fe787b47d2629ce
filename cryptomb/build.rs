//! Generates the kernel's straight-line big-number code into
//! `$OUT_DIR/generated.rs`: for every limb count it serves (P-256's 5 limbs,
//! the RSA primes' 20, 30 and 40, the RSA moduli's 40, 60 and 80), the
//! double-width product, the Montgomery reduction, and the normalized
//! Montgomery multiplication and squaring, plus one generic dispatcher per
//! operation. For RSA-2048's primes, where signing spends nearly all its
//! time, multiplication and squaring are scheduled assembly
//! (`build/program.rs`, `build/assemble.rs`); every other size is compiled
//! Rust.
//!
//! Why generated: a product term `x[i]·y[j]` lands in column `i+j` (low
//! half) and `i+j+1` (high half), and accumulators only stay in registers
//! when every index is a constant. Loops keep the columns in memory (a
//! load and a store per multiply-add) or branch on loop positions the
//! predictor keeps missing; this code has neither. Columns are emitted in
//! order (product scanning), each summed on four independent chains, so few
//! registers are live at once and the multiplier's latency stays hidden.
//! Nothing here depends on values: the same instructions run for any input.

use std::fmt::Write;

#[path = "build/assemble.rs"]
mod assemble;
#[path = "build/program.rs"]
mod program;

use program::{Op, Operand, Program, Value};

/// Limb counts: P-256's field and group order, the primes of RSA-2048, 3072 and 4096,
/// and their moduli.
const SIZES: [usize; 6] = [5, 20, 30, 40, 60, 80];

/// One multiply-add term: high or low half of `x·y`.
struct Term {
    high: bool,
    x: String,
    y: String,
}

/// Emits a block summing `start` and `terms` on four chains (two for low
/// halves, two for high halves) into the variable `s`.
fn sum_column(out: &mut String, start: &str, terms: &[Term]) {
    let binding = if terms.is_empty() { "let" } else { "let mut" };
    writeln!(out, "        {binding} c = [z; 4];").unwrap();
    let (mut lows, mut highs) = (0, 0);
    for term in terms {
        let (chain, op) = if term.high {
            highs += 1;
            (2 + highs % 2, "madd_hi")
        } else {
            lows += 1;
            (lows % 2, "madd_lo")
        };
        writeln!(
            out,
            "        c[{chain}] = c[{chain}].{op}({}, {});",
            term.x, term.y
        )
        .unwrap();
    }
    writeln!(
        out,
        "        let s = {start}.add(c[0]).add(c[1]).add(c[2]).add(c[3]);"
    )
    .unwrap();
}

/// The terms of column `k` of `x·y` for `n`-limb operands, pairs admitted
/// by `keep(i, j)`.
fn column_terms(
    n: usize,
    k: usize,
    x: &str,
    y: &str,
    keep: impl Fn(usize, usize) -> bool,
) -> Vec<Term> {
    let mut terms = Vec::new();
    for i in 0..n {
        if let Some(j) = k.checked_sub(i).filter(|&j| j < n && keep(i, j)) {
            terms.push(Term {
                high: false,
                x: format!("{x}[{i}]"),
                y: format!("{y}[{j}]"),
            });
        }
        if let Some(j) = k.checked_sub(i + 1).filter(|&j| j < n && keep(i, j)) {
            terms.push(Term {
                high: true,
                x: format!("{x}[{i}]"),
                y: format!("{y}[{j}]"),
            });
        }
    }
    terms
}

/// Writes the function header shared by every generated function.
fn header(out: &mut String, doc: &str, signature: &str) {
    opening(out, doc, signature);
    writeln!(out, "    let z = Lanes::zero();").unwrap();
}

/// Writes a generated function's doc comment, attributes and signature,
/// up to its opening brace, marked `#[inline]`.
fn opening(out: &mut String, doc: &str, signature: &str) {
    opening_with(out, "inline", doc, signature);
}

/// [`opening`] with the function's inlining attribute.
fn opening_with(out: &mut String, inline: &str, doc: &str, signature: &str) {
    writeln!(out, "/// {doc}").unwrap();
    writeln!(out, "#[{inline}]").unwrap();
    writeln!(out, "#[target_feature(enable = \"avx512f,avx512ifma\")]").unwrap();
    writeln!(out, "pub fn {signature} {{").unwrap();
}

/// A double-width product function `name_n`: column `k` sums the terms of `a·<b>` that
/// `keep` admits, and `finish(k)` turns that sum `s` into the stored limb.
fn double_width(
    out: &mut String,
    n: usize,
    (name, doc, b): (&str, &str, &str),
    keep: impl Fn(usize, usize) -> bool,
    finish: impl Fn(usize) -> String,
) {
    let w = 2 * n;
    let params = if b == "a" {
        format!("a: &[Lanes; {n}]")
    } else {
        format!("a: &[Lanes; {n}], {b}: &[Lanes; {n}]")
    };
    header(
        out,
        &format!("{doc} as {w} unnormalized limbs, for {n}-limb operands."),
        &format!("{name}_{n}({params}) -> [Lanes; {w}]"),
    );
    writeln!(out, "    let mut t = [z; {w}];").unwrap();
    for k in 0..w {
        writeln!(out, "    {{").unwrap();
        sum_column(out, "z", &column_terms(n, k, "a", b, &keep));
        writeln!(out, "        t[{k}] = {};\n    }}", finish(k)).unwrap();
    }
    writeln!(out, "    t\n}}\n").unwrap();
}

/// `a·b`, double width, limbs unnormalized.
fn product(out: &mut String, n: usize) {
    double_width(
        out,
        n,
        ("product", "`a·b`", "b"),
        |_, _| true,
        |_| "s".into(),
    );
}

/// Limb counts whose Montgomery multiplication and squaring are written as
/// scheduled assembly: RSA-2048's primes, where nearly all signing time goes.
/// Their working set fits the 32 vector registers; the larger sizes would
/// spill on every row, and P-256's 5 limbs leave nothing to schedule, so
/// those stay compiled Rust.
const ASSEMBLED: [usize; 1] = [20];

/// Montgomery multiplication and squaring for `n` limbs as compiled Rust:
/// the double-width product or square, then its reduction.
fn compiled_montgomery(out: &mut String, n: usize) {
    for (name, params, args, product) in [
        (
            "mont_multiply",
            format!("a: &[Lanes; {n}], b: &[Lanes; {n}]"),
            "a, b",
            "product",
        ),
        (
            "mont_square",
            format!("a: &[Lanes; {n}]"),
            "a",
            "square_product",
        ),
    ] {
        opening(
            out,
            &format!("`{name}` for {n} limbs: below `2m`, normalized."),
            &format!("{name}_{n}({params}, m: &[Lanes; {n}], k0: Lanes) -> [Lanes; {n}]"),
        );
        writeln!(
            out,
            "    normalize(reduce_{n}(&{product}_{n}({args}), m, k0))\n}}\n"
        )
        .unwrap();
    }
}

/// Input limb `array[index]`.
fn limb(array: &'static str, index: usize) -> Value {
    Value::Input(array, index)
}

/// The value an instruction computed (every `push` returns one).
fn computed(operand: Operand) -> Value {
    match operand {
        Operand::Value(value) => value,
        Operand::Zero => unreachable!("instructions return values"),
    }
}

/// Montgomery reduction of the double-width accumulators `t`, row by row
/// (operand scanning): row `i` takes the quotient digit `u` that clears
/// limb `i`, adds `u·m` at limb `i`, and passes the cleared limb's carry
/// on. Returns the upper half, `t·R⁻¹ mod m` below `2m`, unnormalized.
fn reduce_rows(program: &mut Program, mut t: Vec<Operand>, n: usize) -> Vec<Value> {
    for i in 0..n {
        let u = computed(program.madd_lo(Operand::Zero, computed(t[i]), limb("k0", 0)));
        let cleared = program.madd_lo(t[i], limb("m", 0), u);
        let carry = computed(program.push(cleared, Op::Carry));
        for j in 1..n {
            t[i + j] = program.madd_lo(t[i + j], limb("m", j), u);
        }
        for j in 0..n {
            t[i + j + 1] = program.madd_hi(t[i + j + 1], limb("m", j), u);
        }
        t[i + 1] = program.push(t[i + 1], Op::Add(carry));
    }
    t.split_off(n).into_iter().map(computed).collect()
}

/// Carries each limb's excess into the next so every limb is below 2^52,
/// as the next multiplication's inputs must be: inside the program, the
/// schedule overlaps this serial chain with the reduction's last rows.
fn normalize(program: &mut Program, limbs: Vec<Value>) -> Vec<Value> {
    let mut carry = None;
    limbs
        .into_iter()
        .map(|limb| {
            let sum = match carry {
                Some(c) => computed(program.push(Operand::Value(limb), Op::Add(c))),
                None => limb,
            };
            carry = Some(computed(program.push(Operand::Value(sum), Op::Carry)));
            computed(program.push(Operand::Value(sum), Op::And(limb_mask())))
        })
        .collect()
}

/// The input holding 2^52 − 1 in every lane.
fn limb_mask() -> Value {
    Value::Input("mask", 0)
}

/// Writes `name_n`, a Montgomery operation in scheduled assembly:
/// `accumulate` builds the double-width product of the `arrays`,
/// [`reduce_rows`] reduces it.
fn montgomery(
    out: &mut String,
    n: usize,
    (name, doc, arrays): (&str, &str, &[&str]),
    accumulate: impl Fn(&mut Program, &mut [Operand]),
) {
    let params: Vec<String> = arrays
        .iter()
        .map(|a| format!("{a}: &[Lanes; {n}]"))
        .collect();
    // Each block is about 10 KB of code: inlined at every call (five
    // squarings per window), the exponentiation loop outgrows the
    // instruction cache and runs from the legacy decoders, 8% slower per
    // RSA-2048 batch. The compiled sizes measured better inlined.
    opening_with(
        out,
        "inline(never)",
        &format!("{doc}·R⁻¹ mod m` (below `2m` for inputs below `4m`), normalized, for {n}-limb operands."),
        &format!("{name}_{n}({}, m: &[Lanes; {n}], k0: Lanes) -> [Lanes; {n}]", params.join(", ")),
    );
    writeln!(out, "    let k0 = [k0];").unwrap();
    writeln!(out, "    let mask = [Lanes::splat(LIMB_MASK)];").unwrap();
    let mut program = Program::default();
    let mut t = vec![Operand::Zero; 2 * n];
    accumulate(&mut program, &mut t);
    let reduced = reduce_rows(&mut program, t, n);
    let result = normalize(&mut program, reduced);
    let (lines, slots) = assemble::assemble(&program, &program.schedule(), &result);
    let mut all: Vec<&str> = arrays.to_vec();
    all.extend(["m", "k0", "mask"]);
    assemble::function_body(out, &lines, slots, &all, n);
    writeln!(out, "}}\n").unwrap();
}

/// Montgomery multiplication `a·b·R⁻¹ mod m`.
fn mont_multiply(out: &mut String, n: usize) {
    montgomery(
        out,
        n,
        ("mont_multiply", "`a·b", &["a", "b"]),
        |program, t| {
            for i in 0..n {
                for j in 0..n {
                    t[i + j] = program.madd_lo(t[i + j], limb("a", i), limb("b", j));
                    t[i + j + 1] = program.madd_hi(t[i + j + 1], limb("a", i), limb("b", j));
                }
            }
        },
    );
}

/// Montgomery squaring `a²·R⁻¹ mod m`: each cross product once, doubled,
/// plus the diagonal, about three quarters of a multiplication's work.
fn mont_square(out: &mut String, n: usize) {
    montgomery(out, n, ("mont_square", "`a²", &["a"]), |program, t| {
        for i in 0..n {
            for j in i + 1..n {
                t[i + j] = program.madd_lo(t[i + j], limb("a", i), limb("a", j));
                t[i + j + 1] = program.madd_hi(t[i + j + 1], limb("a", i), limb("a", j));
            }
        }
        for (k, column) in t.iter_mut().enumerate() {
            if *column != Operand::Zero {
                *column = program.push(*column, Op::Double);
            }
            let d = limb("a", k / 2);
            *column = if k % 2 == 0 {
                program.madd_lo(*column, d, d)
            } else {
                program.madd_hi(*column, d, d)
            };
        }
    });
}

/// `a²`, double width: cross products once, doubled, plus the diagonal.
fn square(out: &mut String, n: usize) {
    let diagonal = |k: usize| {
        let (d, op) = (
            k / 2,
            if k.is_multiple_of(2) {
                "madd_lo"
            } else {
                "madd_hi"
            },
        );
        format!("s.double().{op}(a[{d}], a[{d}])")
    };
    double_width(
        out,
        n,
        ("square_product", "`a²`", "a"),
        |i, j| i < j,
        diagonal,
    );
}

/// Montgomery reduction by product scanning: column `k < n` fixes the
/// quotient digit `q[k]` that clears it; columns `n..2n` are the result.
fn reduce(out: &mut String, n: usize) {
    let w = 2 * n;
    header(
        out,
        &format!("`t·R⁻¹ mod m` (below `2m` for `t < R·m`), unnormalized, for {n}-limb `m`."),
        &format!("reduce_{n}(t: &[Lanes; {w}], m: &[Lanes; {n}], k0: Lanes) -> [Lanes; {n}]"),
    );
    writeln!(
        out,
        "    let mut q = [z; {n}];\n    let mut r = [z; {n}];\n    let mut carry = z;"
    )
    .unwrap();
    for k in 0..w {
        writeln!(out, "    {{").unwrap();
        // q[k]·m[0] joins column k only once q[k] is known, below.
        let terms = column_terms(n, k, "q", "m", |i, _| i < k.min(n));
        sum_column(out, &format!("t[{k}].add(carry)"), &terms);
        if k < n {
            writeln!(out, "        q[{k}] = z.madd_lo(s, k0);").unwrap();
            writeln!(out, "        carry = s.madd_lo(q[{k}], m[0]).carry();").unwrap();
        } else if k == n {
            writeln!(out, "        r[0] = s;\n        carry = z;").unwrap();
        } else {
            writeln!(out, "        r[{}] = s;", k - n).unwrap();
        }
        writeln!(out, "    }}").unwrap();
    }
    writeln!(out, "    r\n}}\n").unwrap();
}

/// A generic entry point choosing the generated function for `N` limbs.
fn dispatcher(out: &mut String, name: &str, doc: &str, params: &str, ret: &str, args: &str) {
    opening(
        out,
        doc,
        &format!("{name}<const N: usize, const W: usize>({params}) -> {ret}"),
    );
    writeln!(out, "    match N {{").unwrap();
    for n in SIZES {
        writeln!(out, "        {n} => *cast(&{name}_{n}({args})),").unwrap();
    }
    writeln!(
        out,
        "        _ => unreachable!(\"no {name} generated for {{N}} limbs\"),\n    }}\n}}\n"
    )
    .unwrap();
}

fn main() {
    let mut out = String::new();
    writeln!(
        out,
        "/// Reinterprets a fixed array as another length; the lengths are equal\n\
         /// wherever a dispatcher calls it (the match arm fixed them).\n\
         fn cast<const F: usize, const T: usize>(x: &[Lanes; F]) -> &[Lanes; T] {{\n    \
         x.as_slice().try_into().expect(\"generated for this size\")\n}}\n"
    )
    .unwrap();
    for n in SIZES {
        product(&mut out, n);
        reduce(&mut out, n);
        if ASSEMBLED.contains(&n) {
            mont_multiply(&mut out, n);
            mont_square(&mut out, n);
        } else {
            square(&mut out, n);
            compiled_montgomery(&mut out, n);
        }
    }
    dispatcher(
        &mut out,
        "product",
        "`a·b`, `W = 2·N` unnormalized limbs.",
        "a: &[Lanes; N], b: &[Lanes; N]",
        "[Lanes; W]",
        "cast(a), cast(b)",
    );
    dispatcher(
        &mut out,
        "mont_multiply",
        "`a·b·R⁻¹ mod m`, below `2m`, normalized.",
        "a: &[Lanes; N], b: &[Lanes; N], m: &[Lanes; N], k0: Lanes",
        "[Lanes; N]",
        "cast(a), cast(b), cast(m), k0",
    );
    dispatcher(
        &mut out,
        "mont_square",
        "`a²·R⁻¹ mod m`, below `2m`, normalized.",
        "a: &[Lanes; N], m: &[Lanes; N], k0: Lanes",
        "[Lanes; N]",
        "cast(a), cast(m), k0",
    );
    dispatcher(
        &mut out,
        "reduce",
        "`t·R⁻¹ mod m` for `W = 2·N`-limb `t < R·m`: below `2m`, unnormalized.",
        "t: &[Lanes; W], m: &[Lanes; N], k0: Lanes",
        "[Lanes; N]",
        "cast(t), cast(m), k0",
    );
    let path = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("generated.rs");
    std::fs::write(path, out).unwrap();
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=build");
}
