//! Syntax tree of the safe language and its canonical printer.
//!
//! Operator chains of one precedence level are flat (`a + b - c` is one
//! [`Expr::Binary`]), so the tree depth follows the syntactic nesting, which
//! the parser bounds.

use std::fmt;

use super::value::number_to_string;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Number(f64),
    String(String),
    Bool(bool),
    Null,
    Ident(String),
    Array(Vec<Expr>),
    /// `root.name[index]...`; `segments` is never empty.
    Path {
        root: Box<Expr>,
        segments: Vec<Segment>,
    },
    /// `ops` in source order (`!-x` is `[Not, Neg]`); never empty; the operand
    /// is never itself a `Unary`.
    Unary {
        ops: Vec<UnaryOp>,
        operand: Box<Expr>,
    },
    /// A left-associative chain of operators of one precedence level.
    Binary {
        first: Box<Expr>,
        rest: Vec<(BinaryOp, Expr)>,
    },
    /// `a && b && c`, `a || b`, `a ?? b`; at least two operands.
    Logical {
        op: LogicalOp,
        operands: Vec<Expr>,
    },
    Conditional {
        test: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Segment {
    /// `.name` (also `.0`).
    Name(String),
    /// `[expression]`.
    Index(Expr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnaryOp {
    Not,
    Neg,
    Plus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    Mul,
    Div,
    Rem,
    Add,
    Sub,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    NotEq,
    StrictEq,
    StrictNotEq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogicalOp {
    And,
    Or,
    Coalesce,
}

// Precedence levels, loosest first.
pub(crate) const PREC_CONDITIONAL: u8 = 1;
pub(crate) const PREC_COALESCE: u8 = 2;
pub(crate) const PREC_OR: u8 = 3;
pub(crate) const PREC_AND: u8 = 4;
pub(crate) const PREC_EQUALITY: u8 = 5;
pub(crate) const PREC_RELATIONAL: u8 = 6;
pub(crate) const PREC_ADDITIVE: u8 = 7;
pub(crate) const PREC_MULTIPLICATIVE: u8 = 8;
pub(crate) const PREC_UNARY: u8 = 9;
pub(crate) const PREC_POSTFIX: u8 = 10;
pub(crate) const PREC_PRIMARY: u8 = 11;

impl BinaryOp {
    pub(crate) fn precedence(self) -> u8 {
        match self {
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem => PREC_MULTIPLICATIVE,
            BinaryOp::Add | BinaryOp::Sub => PREC_ADDITIVE,
            BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => PREC_RELATIONAL,
            BinaryOp::Eq | BinaryOp::NotEq | BinaryOp::StrictEq | BinaryOp::StrictNotEq => {
                PREC_EQUALITY
            }
        }
    }

    pub(crate) fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Eq => "==",
            BinaryOp::NotEq => "!=",
            BinaryOp::StrictEq => "===",
            BinaryOp::StrictNotEq => "!==",
        }
    }
}

impl LogicalOp {
    fn precedence(self) -> u8 {
        match self {
            LogicalOp::And => PREC_AND,
            LogicalOp::Or => PREC_OR,
            LogicalOp::Coalesce => PREC_COALESCE,
        }
    }

    /// Loosest precedence an operand may have without parentheses.
    fn operand_precedence(self) -> u8 {
        match self {
            LogicalOp::And => PREC_EQUALITY,
            LogicalOp::Or => PREC_AND,
            LogicalOp::Coalesce => PREC_EQUALITY,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            LogicalOp::And => "&&",
            LogicalOp::Or => "||",
            LogicalOp::Coalesce => "??",
        }
    }
}

impl UnaryOp {
    fn symbol(self) -> char {
        match self {
            UnaryOp::Not => '!',
            UnaryOp::Neg => '-',
            UnaryOp::Plus => '+',
        }
    }
}

impl Expr {
    pub(crate) fn precedence(&self) -> u8 {
        match self {
            Expr::Number(_)
            | Expr::String(_)
            | Expr::Bool(_)
            | Expr::Null
            | Expr::Ident(_)
            | Expr::Array(_) => PREC_PRIMARY,
            Expr::Path { .. } => PREC_POSTFIX,
            Expr::Unary { .. } => PREC_UNARY,
            Expr::Binary { rest, .. } => {
                rest.first().map_or(PREC_PRIMARY, |(op, _)| op.precedence())
            }
            Expr::Logical { op, .. } => op.precedence(),
            Expr::Conditional { .. } => PREC_CONDITIONAL,
        }
    }
}

/// Writes `expr`, parenthesized when it binds looser than `min`.
fn operand(f: &mut fmt::Formatter<'_>, expr: &Expr, min: u8) -> fmt::Result {
    if expr.precedence() < min {
        write!(f, "({expr})")
    } else {
        write!(f, "{expr}")
    }
}

/// A string literal in double quotes with JS escapes.
pub(crate) fn write_string_literal(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                write!(f, "\\u{:04X}", u32::from(c))?
            }
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Number(n) => {
                if n.is_infinite() {
                    // A literal too large for a double.
                    f.write_str("1e999")
                } else {
                    f.write_str(&number_to_string(*n))
                }
            }
            Expr::String(s) => write_string_literal(f, s),
            Expr::Bool(b) => write!(f, "{b}"),
            Expr::Null => f.write_str("null"),
            Expr::Ident(name) => f.write_str(name),
            Expr::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Expr::Path { root, segments } => {
                if matches!(**root, Expr::Number(_)) {
                    write!(f, "({root})")?;
                } else {
                    operand(f, root, PREC_PRIMARY)?;
                }
                for segment in segments {
                    match segment {
                        Segment::Name(name) => write!(f, ".{name}")?,
                        Segment::Index(index) => write!(f, "[{index}]")?,
                    }
                }
                Ok(())
            }
            Expr::Unary {
                ops,
                operand: inner,
            } => {
                let mut previous: Option<char> = None;
                for op in ops {
                    let symbol = op.symbol();
                    // `- -x`, not the `--x` decrement.
                    if previous == Some(symbol) && symbol != '!' {
                        f.write_str(" ")?;
                    }
                    write!(f, "{symbol}")?;
                    previous = Some(symbol);
                }
                operand(f, inner, PREC_POSTFIX)
            }
            Expr::Binary { first, rest } => {
                let min = self.precedence() + 1;
                operand(f, first, min)?;
                for (op, rhs) in rest {
                    write!(f, " {} ", op.symbol())?;
                    operand(f, rhs, min)?;
                }
                Ok(())
            }
            Expr::Logical { op, operands } => {
                for (i, item) in operands.iter().enumerate() {
                    if i > 0 {
                        write!(f, " {} ", op.symbol())?;
                    }
                    operand(f, item, op.operand_precedence())?;
                }
                Ok(())
            }
            Expr::Conditional {
                test,
                then,
                otherwise,
            } => {
                operand(f, test, PREC_COALESCE)?;
                write!(f, " ? {then} : {otherwise}")
            }
        }
    }
}

impl Segment {
    /// The segment as written, for error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Segment::Name(name) => name.clone(),
            Segment::Index(index) => format!("[{index}]"),
        }
    }
}
