//! The part of CEL Istio's metric dimensions use: string and integer literals,
//! attribute paths (`xds.node.metadata['LABELS'].app`, `filter_state.upstream_peer.service`),
//! map and list indexing, and `+` (string concatenation, integer addition). Expressions
//! are parsed once, at config load, and evaluated per request against the attributes
//! istio/proxy offers ([`attributes`] builds them).

use serde_json::Value;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A string or integer literal.
    Literal(Value),
    /// A top-level attribute (`xds`, `request`, `filter_state`, ...).
    Attribute(String),
    /// `e.field`.
    Member(Box<Expr>, String),
    /// `e[key]`.
    Index(Box<Expr>, Box<Expr>),
    /// `a + b`.
    Add(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Str(String),
    Int(i64),
    Ident(String),
    Sym(char),
}

fn tokens(src: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = src.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' | '\n' => {
                chars.next();
            }
            '\'' | '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') => {
                            return Err("escapes in string literals are not supported".into())
                        }
                        Some(ch) => s.push(ch),
                        None => return Err("unterminated string literal".into()),
                    }
                }
                out.push(Token::Str(s));
            }
            '0'..='9' => {
                let mut n = String::new();
                while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    n.push(d);
                    chars.next();
                }
                out.push(Token::Int(
                    n.parse().map_err(|_| format!("bad integer {n}"))?,
                ));
            }
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
            '.' | '[' | ']' | '(' | ')' | '+' => {
                out.push(Token::Sym(c));
                chars.next();
            }
            other => return Err(format!("unsupported character {other:?}")),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
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

    fn expect(&mut self, c: char) -> Result<(), String> {
        match self.next() {
            Some(Token::Sym(s)) if s == c => Ok(()),
            other => Err(format!("expected {c:?}, found {other:?}")),
        }
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut left = self.path()?;
        while self.peek() == Some(&Token::Sym('+')) {
            self.next();
            left = Expr::Add(Box::new(left), Box::new(self.path()?));
        }
        Ok(left)
    }

    fn path(&mut self) -> Result<Expr, String> {
        let mut e = match self.next() {
            Some(Token::Str(s)) => Expr::Literal(Value::String(s)),
            Some(Token::Int(n)) => Expr::Literal(Value::from(n)),
            Some(Token::Ident(id)) => Expr::Attribute(id),
            Some(Token::Sym('(')) => {
                let inner = self.sum()?;
                self.expect(')')?;
                inner
            }
            other => return Err(format!("unexpected {other:?}")),
        };
        loop {
            match self.peek() {
                Some(Token::Sym('.')) => {
                    self.next();
                    match self.next() {
                        Some(Token::Ident(f)) => e = Expr::Member(Box::new(e), f),
                        other => return Err(format!("expected a field name, found {other:?}")),
                    }
                }
                Some(Token::Sym('[')) => {
                    self.next();
                    let key = self.sum()?;
                    self.expect(']')?;
                    e = Expr::Index(Box::new(e), Box::new(key));
                }
                _ => return Ok(e),
            }
        }
    }
}

/// Parses an expression of the supported subset.
pub fn parse(src: &str) -> Result<Expr, String> {
    let mut p = Parser {
        tokens: tokens(src)?,
        at: 0,
    };
    let e = p.sum()?;
    match p.peek() {
        None => Ok(e),
        Some(t) => Err(format!("unexpected {t:?} after the expression")),
    }
}

impl Expr {
    /// The value against `attributes`; `None` when an attribute is missing or the types
    /// do not fit (Istio reports such a dimension as `unknown`).
    pub fn eval(&self, attributes: &Value) -> Option<Value> {
        Some(match self {
            Expr::Literal(v) => v.clone(),
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
            Expr::Add(a, b) => match (a.eval(attributes)?, b.eval(attributes)?) {
                (Value::String(x), Value::String(y)) => Value::String(x + &y),
                (Value::Number(x), Value::Number(y)) => {
                    Value::from(x.as_i64()?.checked_add(y.as_i64()?)?)
                }
                _ => return None,
            },
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

    /// The expression's value if it needs no attributes (a literal, or literals added).
    pub fn constant(&self) -> Option<String> {
        self.label(&Value::Null)
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
}
