//! The CEL that Istio's metric dimensions and Telemetry `tagOverrides` use: literals
//! (strings, integers, doubles, booleans, `null`, lists), attribute paths
//! (`xds.node.metadata['LABELS'].app`, `request.headers['user-agent']`), indexing,
//! arithmetic (`+ - * / %`, `+` also joining strings and lists), comparisons
//! (`== != < <= > >=`, `in`), logic (`! && ||`, with CEL's absorption of errors),
//! the conditional `c ? a : b`, the `has()` macro, the functions `size`, `string`,
//! `int`, `double`, and the string methods `startsWith`, `endsWith`, `contains`,
//! `matches` and `size`. Expressions are parsed once, at config load, and evaluated per
//! request against the attributes istio/proxy offers; an error while evaluating yields
//! no value, which Istio reports as `unknown`.

use serde_json::Value;

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `in`
    In,
}

/// A compiled `matches()` pattern, equal to another with the same source (so configs
/// holding expressions compare).
#[derive(Debug, Clone)]
pub struct Pattern(regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Literal(Value),
    /// A list literal `[a, b]`.
    List(Vec<Expr>),
    /// A top-level attribute (`xds`, `request`, `filter_state`, ...).
    Attribute(String),
    /// `e.field`.
    Member(Box<Expr>, String),
    /// `e[key]`.
    Index(Box<Expr>, Box<Expr>),
    /// `a op b`.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `!e`.
    Not(Box<Expr>),
    /// `-e`.
    Neg(Box<Expr>),
    /// `a && b`.
    And(Box<Expr>, Box<Expr>),
    /// `a || b`.
    Or(Box<Expr>, Box<Expr>),
    /// `c ? a : b`.
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `has(e.field)` / `has(e[key])`: whether the field is present.
    Has(Box<Expr>),
    /// A function or method call (`size(x)`, `x.startsWith(y)`: the receiver first).
    Call(Function, Vec<Expr>),
    /// `x.matches(re)` with a literal pattern, compiled at parse time.
    Matches(Box<Expr>, Pattern),
}

/// The functions and methods supported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Function {
    /// `size(x)`, `x.size()`: characters of a string, elements of a list or map.
    Size,
    /// `string(x)`.
    String,
    /// `int(x)`.
    Int,
    /// `double(x)`.
    Double,
    /// `s.startsWith(p)`.
    StartsWith,
    /// `s.endsWith(p)`.
    EndsWith,
    /// `s.contains(p)`.
    Contains,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Str(String),
    Int(i64),
    Double(f64),
    Ident(String),
    /// Operators and punctuation, one or two characters.
    Sym(&'static str),
}

const SYMBOLS: &[&str] = &[
    "==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "+", "-", "*", "/", "%", "?", ":", ".", ",",
    "[", "]", "(", ")",
];

fn string_literal(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    quote: char,
) -> Result<String, String> {
    let mut s = String::new();
    loop {
        match chars.next() {
            Some(q) if q == quote => return Ok(s),
            Some('\\') => match chars.next() {
                Some('n') => s.push('\n'),
                Some('t') => s.push('\t'),
                Some('r') => s.push('\r'),
                Some(c @ ('\\' | '\'' | '"')) => s.push(c),
                other => return Err(format!("unsupported escape \\{other:?}")),
            },
            Some(ch) => s.push(ch),
            None => return Err("unterminated string literal".into()),
        }
    }
}

fn number(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<Token, String> {
    let mut n = String::new();
    while let Some(&d) = chars
        .peek()
        .filter(|d| d.is_ascii_digit() || **d == '.' || **d == 'e')
    {
        n.push(d);
        chars.next();
    }
    // `1u` is an unsigned literal: the same value here.
    if chars.peek() == Some(&'u') {
        chars.next();
    }
    if n.contains(['.', 'e']) {
        n.parse()
            .map(Token::Double)
            .map_err(|_| format!("bad number {n}"))
    } else {
        n.parse()
            .map(Token::Int)
            .map_err(|_| format!("bad integer {n}"))
    }
}

fn tokens(src: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = src.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                chars.next();
            }
            '\'' | '"' => {
                chars.next();
                out.push(Token::Str(string_literal(&mut chars, c)?));
            }
            '0'..='9' => out.push(number(&mut chars)?),
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut id = String::new();
                while let Some(&d) = chars
                    .peek()
                    .filter(|d| d.is_ascii_alphanumeric() || **d == '_')
                {
                    id.push(d);
                    chars.next();
                }
                out.push(Token::Ident(id));
            }
            _ => {
                let rest: String = chars.clone().take(2).collect();
                let sym = SYMBOLS
                    .iter()
                    .find(|s| rest.starts_with(**s))
                    .ok_or_else(|| format!("unsupported character {c:?}"))?;
                for _ in 0..sym.len() {
                    chars.next();
                }
                out.push(Token::Sym(sym));
            }
        }
    }
    Ok(out)
}

/// The most tokens an expression may have. Parsing, evaluating and dropping an
/// expression all recurse as deep as its tree, and a tree is never deeper than its
/// tokens are many: a bound here keeps a hostile expression from overflowing the stack.
const MAX_TOKENS: usize = 1024;

/// How deep parentheses, lists, calls, indexes and conditionals may nest: the parser
/// recurses through every precedence level at each of them.
const MAX_NESTING: usize = 32;

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// Sub-expressions being parsed, one inside the other.
    nesting: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    /// Consumes `sym` if it comes next.
    fn eat(&mut self, sym: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Sym(s)) if *s == sym);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect(&mut self, sym: &str) -> Result<(), String> {
        if self.eat(sym) {
            Ok(())
        } else {
            Err(format!("expected {sym:?}, found {:?}", self.peek()))
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(format!("expression nested deeper than {MAX_NESTING}"));
        }
        let e = self.conditional();
        self.nesting -= 1;
        e
    }

    fn conditional(&mut self) -> Result<Expr, String> {
        let c = self.or()?;
        if !self.eat("?") {
            return Ok(c);
        }
        let a = self.or()?;
        self.expect(":")?;
        let b = self.expr()?;
        Ok(Expr::Cond(Box::new(c), Box::new(a), Box::new(b)))
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.relation()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.relation()?));
        }
        Ok(left)
    }

    fn relation(&mut self) -> Result<Expr, String> {
        let left = self.sum()?;
        let op = match self.peek() {
            Some(Token::Sym("==")) => BinOp::Eq,
            Some(Token::Sym("!=")) => BinOp::Ne,
            Some(Token::Sym("<")) => BinOp::Lt,
            Some(Token::Sym("<=")) => BinOp::Le,
            Some(Token::Sym(">")) => BinOp::Gt,
            Some(Token::Sym(">=")) => BinOp::Ge,
            Some(Token::Ident(i)) if i == "in" => BinOp::In,
            _ => return Ok(left),
        };
        self.next();
        Ok(Expr::Binary(op, Box::new(left), Box::new(self.sum()?)))
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut left = self.product()?;
        loop {
            let op = if self.eat("+") {
                BinOp::Add
            } else if self.eat("-") {
                BinOp::Sub
            } else {
                return Ok(left);
            };
            left = Expr::Binary(op, Box::new(left), Box::new(self.product()?));
        }
    }

    fn product(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat("*") {
                BinOp::Mul
            } else if self.eat("/") {
                BinOp::Div
            } else if self.eat("%") {
                BinOp::Rem
            } else {
                return Ok(left);
            };
            left = Expr::Binary(op, Box::new(left), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.member()
    }

    /// Comma-separated expressions up to `close`.
    fn list(&mut self, close: &str) -> Result<Vec<Expr>, String> {
        let mut items = Vec::new();
        if self.eat(close) {
            return Ok(items);
        }
        loop {
            items.push(self.expr()?);
            if self.eat(close) {
                return Ok(items);
            }
            self.expect(",")?;
        }
    }

    fn primary(&mut self) -> Result<Expr, String> {
        Ok(match self.next() {
            Some(Token::Str(s)) => Expr::Literal(Value::String(s)),
            Some(Token::Int(n)) => Expr::Literal(Value::from(n)),
            Some(Token::Double(d)) => Expr::Literal(Value::from(d)),
            Some(Token::Sym("(")) => {
                let inner = self.expr()?;
                self.expect(")")?;
                inner
            }
            Some(Token::Sym("[")) => Expr::List(self.list("]")?),
            Some(Token::Ident(id)) => match id.as_str() {
                "true" => Expr::Literal(Value::Bool(true)),
                "false" => Expr::Literal(Value::Bool(false)),
                "null" => Expr::Literal(Value::Null),
                _ if self.eat("(") => global_call(&id, self.list(")")?)?,
                _ => Expr::Attribute(id),
            },
            other => return Err(format!("unexpected {other:?}")),
        })
    }

    fn member(&mut self) -> Result<Expr, String> {
        let mut e = self.primary()?;
        loop {
            if self.eat(".") {
                let field = match self.next() {
                    Some(Token::Ident(f)) => f,
                    other => return Err(format!("expected a field name, found {other:?}")),
                };
                e = if self.eat("(") {
                    let args = self.list(")")?;
                    method_call(e, &field, args)?
                } else {
                    Expr::Member(Box::new(e), field)
                };
            } else if self.eat("[") {
                let key = self.expr()?;
                self.expect("]")?;
                e = Expr::Index(Box::new(e), Box::new(key));
            } else {
                return Ok(e);
            }
        }
    }
}

fn arity(name: &str, args: &[Expr], n: usize) -> Result<(), String> {
    if args.len() == n {
        Ok(())
    } else {
        Err(format!("{name} takes {n} argument(s), got {}", args.len()))
    }
}

fn global_call(name: &str, mut args: Vec<Expr>) -> Result<Expr, String> {
    arity(name, &args, 1)?;
    let f = match name {
        "has" => {
            return match args.pop() {
                Some(e @ (Expr::Member(..) | Expr::Index(..))) => Ok(Expr::Has(Box::new(e))),
                _ => Err("has() needs a field selection".into()),
            }
        }
        "size" => Function::Size,
        "string" => Function::String,
        "int" | "uint" => Function::Int,
        "double" => Function::Double,
        _ => return Err(format!("unsupported function {name}()")),
    };
    Ok(Expr::Call(f, args))
}

fn method_call(receiver: Expr, name: &str, mut args: Vec<Expr>) -> Result<Expr, String> {
    let f = match name {
        "size" => {
            arity(name, &args, 0)?;
            return Ok(Expr::Call(Function::Size, vec![receiver]));
        }
        "matches" => {
            arity(name, &args, 1)?;
            let Some(Expr::Literal(Value::String(re))) = args.pop() else {
                return Err("matches() needs a string literal pattern".into());
            };
            let re = regex::Regex::new(&re).map_err(|e| format!("invalid regex: {e}"))?;
            return Ok(Expr::Matches(Box::new(receiver), Pattern(re)));
        }
        "startsWith" => Function::StartsWith,
        "endsWith" => Function::EndsWith,
        "contains" => Function::Contains,
        _ => return Err(format!("unsupported method {name}()")),
    };
    arity(name, &args, 1)?;
    args.insert(0, receiver);
    Ok(Expr::Call(f, args))
}

/// Parses an expression of the supported subset.
pub fn parse(src: &str) -> Result<Expr, String> {
    let tokens = tokens(src)?;
    if tokens.len() > MAX_TOKENS {
        return Err(format!("expression longer than {MAX_TOKENS} tokens"));
    }
    let mut p = Parser {
        tokens,
        at: 0,
        nesting: 0,
    };
    let e = p.expr()?;
    match p.peek() {
        None => Ok(e),
        Some(t) => Err(format!("unexpected {t:?} after the expression")),
    }
}

/// A number as CEL sees it: an int (i64 or u64 in JSON) or a double.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Num {
    Int(i64),
    Double(f64),
}

fn num(v: &Value) -> Option<Num> {
    let n = v.as_number()?;
    match n.as_i64() {
        Some(i) => Some(Num::Int(i)),
        None => n.as_f64().map(Num::Double),
    }
}

fn as_f64(n: Num) -> f64 {
    match n {
        Num::Int(i) => i as f64,
        Num::Double(d) => d,
    }
}

fn arithmetic(op: BinOp, a: Num, b: Num) -> Option<Value> {
    if let (Num::Int(x), Num::Int(y)) = (a, b) {
        return Some(Value::from(match op {
            BinOp::Add => x.checked_add(y)?,
            BinOp::Sub => x.checked_sub(y)?,
            BinOp::Mul => x.checked_mul(y)?,
            BinOp::Div => x.checked_div(y)?,
            BinOp::Rem => x.checked_rem(y)?,
            _ => return None,
        }));
    }
    let (x, y) = (as_f64(a), as_f64(b));
    let r = match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => x / y,
        _ => return None,
    };
    serde_json::Number::from_f64(r).map(Value::Number)
}

/// CEL equality, numbers compared by value across int and double.
fn equal(a: &Value, b: &Value) -> bool {
    match (num(a), num(b)) {
        (Some(x), Some(y)) => as_f64(x) == as_f64(y),
        _ => a == b,
    }
}

fn ordering(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => as_f64(num(a)?).partial_cmp(&as_f64(num(b)?)),
    }
}

fn binary(op: BinOp, a: Value, b: Value) -> Option<Value> {
    use std::cmp::Ordering::{Greater, Less};
    Some(match op {
        BinOp::Eq => Value::Bool(equal(&a, &b)),
        BinOp::Ne => Value::Bool(!equal(&a, &b)),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let o = ordering(&a, &b)?;
            Value::Bool(match op {
                BinOp::Lt => o == Less,
                BinOp::Le => o != Greater,
                BinOp::Gt => o == Greater,
                _ => o != Less,
            })
        }
        BinOp::In => Value::Bool(match &b {
            Value::Array(items) => items.iter().any(|i| equal(i, &a)),
            Value::Object(m) => m.contains_key(a.as_str()?),
            _ => return None,
        }),
        BinOp::Add => match (a, b) {
            (Value::String(x), Value::String(y)) => Value::String(x + &y),
            (Value::Array(mut x), Value::Array(y)) => {
                x.extend(y);
                Value::Array(x)
            }
            (x, y) => arithmetic(op, num(&x)?, num(&y)?)?,
        },
        _ => arithmetic(op, num(&a)?, num(&b)?)?,
    })
}

fn call(f: Function, args: Vec<Value>) -> Option<Value> {
    let mut args = args.into_iter();
    let first = args.next()?;
    let text = |v: &Value| v.as_str().map(str::to_string);
    Some(match f {
        Function::Size => Value::from(match &first {
            Value::String(s) => s.chars().count(),
            Value::Array(a) => a.len(),
            Value::Object(m) => m.len(),
            _ => return None,
        }),
        Function::String => Value::String(match first {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return None,
        }),
        Function::Int => Value::from(match first {
            Value::String(s) => s.parse::<i64>().ok()?,
            Value::Number(n) => match n.as_i64() {
                Some(i) => i,
                None => n.as_f64()?.trunc() as i64,
            },
            _ => return None,
        }),
        Function::Double => {
            let d = match first {
                Value::String(s) => s.parse::<f64>().ok()?,
                Value::Number(n) => n.as_f64()?,
                _ => return None,
            };
            Value::Number(serde_json::Number::from_f64(d)?)
        }
        Function::StartsWith | Function::EndsWith | Function::Contains => {
            let (s, p) = (text(&first)?, text(&args.next()?)?);
            Value::Bool(match f {
                Function::StartsWith => s.starts_with(&p),
                Function::EndsWith => s.ends_with(&p),
                _ => s.contains(&p),
            })
        }
    })
}

impl Expr {
    /// The value against `attributes`; `None` when an attribute is missing or the types
    /// do not fit (Istio reports such a dimension as `unknown`).
    pub fn eval(&self, attributes: &Value) -> Option<Value> {
        let bool_of = |e: &Expr| e.eval(attributes).and_then(|v| v.as_bool());
        Some(match self {
            Expr::Literal(v) => v.clone(),
            Expr::List(items) => Value::Array(
                items
                    .iter()
                    .map(|i| i.eval(attributes))
                    .collect::<Option<_>>()?,
            ),
            Expr::Attribute(name) => attributes.get(name)?.clone(),
            Expr::Member(e, field) => e.eval(attributes)?.get(field)?.clone(),
            Expr::Index(e, key) => {
                let base = e.eval(attributes)?;
                match key.eval(attributes)? {
                    Value::String(k) => base.get(&k)?.clone(),
                    Value::Number(n) => base.get(usize::try_from(n.as_u64()?).ok()?)?.clone(),
                    _ => return None,
                }
            }
            Expr::Binary(op, a, b) => binary(*op, a.eval(attributes)?, b.eval(attributes)?)?,
            Expr::Not(e) => Value::Bool(!bool_of(e)?),
            Expr::Neg(e) => match num(&e.eval(attributes)?)? {
                Num::Int(i) => Value::from(i.checked_neg()?),
                Num::Double(d) => Value::Number(serde_json::Number::from_f64(-d)?),
            },
            // CEL's logic absorbs errors: `false && error` is false, `true || error` true.
            Expr::And(a, b) => match (bool_of(a), bool_of(b)) {
                (Some(false), _) | (_, Some(false)) => Value::Bool(false),
                (Some(true), Some(true)) => Value::Bool(true),
                _ => return None,
            },
            Expr::Or(a, b) => match (bool_of(a), bool_of(b)) {
                (Some(true), _) | (_, Some(true)) => Value::Bool(true),
                (Some(false), Some(false)) => Value::Bool(false),
                _ => return None,
            },
            Expr::Cond(c, a, b) => {
                if bool_of(c)? {
                    a.eval(attributes)?
                } else {
                    b.eval(attributes)?
                }
            }
            Expr::Has(e) => Value::Bool(e.eval(attributes).is_some()),
            Expr::Call(f, args) => call(
                *f,
                args.iter()
                    .map(|a| a.eval(attributes))
                    .collect::<Option<_>>()?,
            )?,
            Expr::Matches(e, re) => Value::Bool(re.0.is_match(e.eval(attributes)?.as_str()?)),
        })
    }

    /// The value as a label: strings as they are, numbers and booleans printed.
    pub fn label(&self, attributes: &Value) -> Option<String> {
        match self.eval(attributes)? {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// The expression's value if it reads no attributes (a literal, or literals added).
    pub fn constant(&self) -> Option<String> {
        if self.reads_attributes() {
            return None;
        }
        self.label(&Value::Null)
    }

    fn reads_attributes(&self) -> bool {
        match self {
            Expr::Literal(_) => false,
            Expr::Attribute(_) => true,
            Expr::List(items) | Expr::Call(_, items) => items.iter().any(Expr::reads_attributes),
            Expr::Member(e, _)
            | Expr::Not(e)
            | Expr::Neg(e)
            | Expr::Has(e)
            | Expr::Matches(e, _) => e.reads_attributes(),
            Expr::Index(a, b) | Expr::Binary(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                a.reads_attributes() || b.reads_attributes()
            }
            Expr::Cond(c, a, b) => [c, a, b].iter().any(|e| e.reads_attributes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates_istio_proxy_dimension_expressions() {
        let attrs = json!({"xds": {"node": {"metadata": {"WORKLOAD_NAME": "productpage-v1",
            "LABELS": {"app": "productpage", "version": "v1"}}},
            "route_name": "client_route", "cluster_name": "c",
            "cluster_metadata": {"filter_metadata": {"istio": {"services": [{"name": "server"}]}}}},
            "filter_state": {"upstream_peer": {"service": "ratings", "labels": {"role": "server"}}},
            "request": {"protocol": "HTTP/1.1"}});
        let label = |src: &str| parse(src).unwrap().label(&attrs);
        assert_eq!(
            label("'_' + xds.node.metadata['WORKLOAD_NAME']").as_deref(),
            Some("_productpage-v1")
        );
        assert_eq!(
            label("'_' + xds.node.metadata['LABELS'].app").as_deref(),
            Some("_productpage")
        );
        assert_eq!(
            label("'_' + xds.node.metadata.LABELS.version").as_deref(),
            Some("_v1")
        );
        assert_eq!(
            label("filter_state.upstream_peer.labels['role']").as_deref(),
            Some("server")
        );
        assert_eq!(
            label("xds.route_name + \",\" + xds.cluster_name + \",\" + xds.cluster_metadata.filter_metadata.istio.services[0].name").as_deref(),
            Some("client_route,c,server")
        );
        assert_eq!(label("request.protocol").as_deref(), Some("HTTP/1.1"));
        assert_eq!(label("cannot_evaluate"), None);
        assert!(parse("cannot _ parse | 0").is_err());
        assert_eq!(
            parse("'gateway'").unwrap().constant().as_deref(),
            Some("gateway")
        );
    }

    #[test]
    fn evaluates_telemetry_tag_override_expressions() {
        let attrs = json!({"request": {"headers": {"user-agent": "curl/8.0", "x-tenant": "t1"},
            "url_path": "/api/v1/items", "method": "GET", "size": 12},
            "response": {"code": 503, "grpc_status": "14"}});
        let label = |src: &str| parse(src).unwrap().label(&attrs);
        let cases = [
            (
                "has(request.headers['x-tenant']) ? request.headers['x-tenant'] : 'none'",
                Some("t1"),
            ),
            ("has(request.headers.missing) ? 'yes' : 'no'", Some("no")),
            ("'x-tenant' in request.headers", Some("true")),
            ("request.method in ['GET', 'HEAD']", Some("true")),
            (
                "response.code >= 500 ? 'server_error' : 'ok'",
                Some("server_error"),
            ),
            ("response.code / 100 * 100 + 1", Some("501")),
            (
                "response.code % 100 == 3 && !(request.size < 10)",
                Some("true"),
            ),
            (
                "string(response.code) + '/' + response.grpc_status",
                Some("503/14"),
            ),
            ("int(response.grpc_status) - 4", Some("10")),
            (
                "request.url_path.startsWith('/api') && request.url_path.endsWith('items')",
                Some("true"),
            ),
            ("request.url_path.matches('^/api/v[0-9]+/')", Some("true")),
            (
                "request.headers['user-agent'].contains('curl')",
                Some("true"),
            ),
            (
                "size(request.url_path) == request.url_path.size()",
                Some("true"),
            ),
            ("-request.size", Some("-12")),
            ("double(request.size) / 8.0", Some("1.5")),
            // Errors are absorbed by a decided && / ||, else the label is unknown.
            ("false && request.nope", Some("false")),
            ("request.nope || true", Some("true")),
            ("request.nope || false", None),
            ("request.size + 'text'", None),
            ("1 / 0", None),
        ];
        for (src, want) in cases {
            assert_eq!(label(src).as_deref(), want, "{src}");
        }
        assert_eq!(parse("has(a.b) ? 'x' : 'y'").unwrap().constant(), None);
        assert_eq!(
            parse("1 + 2 > 2 ? 'x' : 'y'")
                .unwrap()
                .constant()
                .as_deref(),
            Some("x")
        );
        for bad in [
            "has(request)",
            "request.url_path.matches(1)",
            "nope(1)",
            "a ? b",
            "'\\q'",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    /// Each of these overflowed the stack (the parser's, then the evaluator's and the
    /// tree's drop) before nesting and length were bounded.
    #[test]
    fn hostile_nesting_and_length_are_refused() {
        let deep = format!("{}1{}", "(".repeat(3000), ")".repeat(3000));
        let negations = format!("{}true", "!".repeat(20_000));
        let long = vec!["1"; 50_000].join("+");
        for src in [&deep, &negations, &long] {
            assert!(parse(src).is_err(), "{}...", &src[..10]);
        }
        let nested = format!(
            "{}1{}",
            "(".repeat(MAX_NESTING - 1),
            ")".repeat(MAX_NESTING - 1)
        );
        assert_eq!(parse(&nested).unwrap().constant().as_deref(), Some("1"));
        let sum = vec!["1"; MAX_TOKENS / 2].join("+");
        assert_eq!(
            parse(&sum).unwrap().constant(),
            Some((MAX_TOKENS / 2).to_string())
        );
    }
}
