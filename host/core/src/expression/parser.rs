//! Recursive-descent parser of the safe language (see the module docs for the
//! grammar).

use super::ast::{BinaryOp, Expr, LogicalOp, PREC_EQUALITY, PREC_MULTIPLICATIVE, Segment, UnaryOp};
use super::lexer::{Tok, Token, tokenize};
use super::{ExpressionError, MAX_NESTING};

/// Parses a safe-language expression (the length limit is checked by the caller).
pub(crate) fn parse(source: &str) -> Result<Expr, ExpressionError> {
    let tokens = tokenize(source)
        .map_err(|error| ExpressionError::syntax(source, error.offset, error.message))?;
    if tokens.len() == 1 {
        return Err(ExpressionError::syntax(source, 0, "expression is empty"));
    }
    let mut parser = Parser {
        source,
        tokens: &tokens,
        pos: 0,
        depth: 0,
    };
    let expr = parser.conditional()?;
    if parser.peek() != &Tok::Eof {
        return Err(parser.unexpected());
    }
    Ok(expr)
}

struct Parser<'s> {
    source: &'s str,
    tokens: &'s [Token],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        // The last token is always Eof and is never consumed.
        &self.tokens[self.pos.min(self.tokens.len() - 1)].tok
    }

    fn offset(&self) -> usize {
        self.tokens[self.pos.min(self.tokens.len() - 1)].offset
    }

    fn bump(&mut self) -> Tok {
        let tok = self.peek().clone();
        if tok != Tok::Eof {
            self.pos += 1;
        }
        tok
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == tok {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn error(&self, message: impl Into<String>) -> ExpressionError {
        ExpressionError::syntax(self.source, self.offset(), message)
    }

    fn unexpected(&self) -> ExpressionError {
        match self.peek() {
            Tok::Eof => self.error("unexpected end of expression"),
            tok => self.error(format!("unexpected {}", tok.describe())),
        }
    }

    fn expect(&mut self, tok: &Tok) -> Result<(), ExpressionError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.error(format!(
                "expected {} but found {}",
                tok.describe(),
                self.peek().describe()
            )))
        }
    }

    /// `short ( "?" conditional ":" conditional )?` — the nesting counter.
    fn conditional(&mut self) -> Result<Expr, ExpressionError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(ExpressionError::too_deep(self.source, self.offset()));
        }
        let test = self.short_circuit()?;
        let expr = if self.eat(&Tok::Question) {
            let then = self.conditional()?;
            self.expect(&Tok::Colon)?;
            let otherwise = self.conditional()?;
            Expr::Conditional {
                test: Box::new(test),
                then: Box::new(then),
                otherwise: Box::new(otherwise),
            }
        } else {
            test
        };
        self.depth -= 1;
        Ok(expr)
    }

    fn mixing_error(&self) -> ExpressionError {
        self.error("'??' cannot be mixed with '&&' or '||' without parentheses")
    }

    /// A `??` chain or an `&&`/`||` expression (JS forbids mixing them).
    fn short_circuit(&mut self) -> Result<Expr, ExpressionError> {
        let first = self.binary(PREC_EQUALITY)?;
        if self.peek() == &Tok::QuestionQuestion {
            let mut operands = vec![first];
            while self.eat(&Tok::QuestionQuestion) {
                operands.push(self.binary(PREC_EQUALITY)?);
            }
            if matches!(self.peek(), Tok::AndAnd | Tok::OrOr) {
                return Err(self.mixing_error());
            }
            return Ok(logical(LogicalOp::Coalesce, operands));
        }
        let mut expr = self.and_chain(first)?;
        if self.peek() == &Tok::OrOr {
            let mut operands = vec![expr];
            while self.eat(&Tok::OrOr) {
                let first = self.binary(PREC_EQUALITY)?;
                operands.push(self.and_chain(first)?);
            }
            expr = logical(LogicalOp::Or, operands);
        }
        if self.peek() == &Tok::QuestionQuestion {
            return Err(self.mixing_error());
        }
        Ok(expr)
    }

    fn and_chain(&mut self, first: Expr) -> Result<Expr, ExpressionError> {
        if self.peek() != &Tok::AndAnd {
            return Ok(first);
        }
        let mut operands = vec![first];
        while self.eat(&Tok::AndAnd) {
            operands.push(self.binary(PREC_EQUALITY)?);
        }
        Ok(logical(LogicalOp::And, operands))
    }

    fn binary_op(&self, level: u8) -> Option<BinaryOp> {
        let op = match self.peek() {
            Tok::Star => BinaryOp::Mul,
            Tok::Slash => BinaryOp::Div,
            Tok::Percent => BinaryOp::Rem,
            Tok::Plus => BinaryOp::Add,
            Tok::Minus => BinaryOp::Sub,
            Tok::Lt => BinaryOp::Lt,
            Tok::Le => BinaryOp::Le,
            Tok::Gt => BinaryOp::Gt,
            Tok::Ge => BinaryOp::Ge,
            Tok::EqEq => BinaryOp::Eq,
            Tok::NotEq => BinaryOp::NotEq,
            Tok::EqEqEq => BinaryOp::StrictEq,
            Tok::NotEqEq => BinaryOp::StrictNotEq,
            _ => return None,
        };
        (op.precedence() == level).then_some(op)
    }

    /// A left-associative chain at `level` (equality .. multiplicative).
    fn binary(&mut self, level: u8) -> Result<Expr, ExpressionError> {
        let next = |parser: &mut Self| {
            if level >= PREC_MULTIPLICATIVE {
                parser.unary()
            } else {
                parser.binary(level + 1)
            }
        };
        debug_assert!((PREC_EQUALITY..=PREC_MULTIPLICATIVE).contains(&level));
        let first = next(self)?;
        let mut rest = Vec::new();
        while let Some(op) = self.binary_op(level) {
            self.pos += 1;
            rest.push((op, next(self)?));
        }
        if rest.is_empty() {
            return Ok(first);
        }
        // `(a + b) + c` is `a + b + c`: flatten a same-level first operand.
        match first {
            Expr::Binary {
                first: inner_first,
                rest: mut inner_rest,
            } if inner_rest
                .first()
                .is_some_and(|(op, _)| op.precedence() == level) =>
            {
                inner_rest.extend(rest);
                Ok(Expr::Binary {
                    first: inner_first,
                    rest: inner_rest,
                })
            }
            first => Ok(Expr::Binary {
                first: Box::new(first),
                rest,
            }),
        }
    }

    fn unary(&mut self) -> Result<Expr, ExpressionError> {
        let mut ops = Vec::new();
        loop {
            let op = match self.peek() {
                Tok::Bang => UnaryOp::Not,
                Tok::Minus => UnaryOp::Neg,
                Tok::Plus => UnaryOp::Plus,
                _ => break,
            };
            self.pos += 1;
            ops.push(op);
        }
        let operand = self.postfix()?;
        if ops.is_empty() {
            return Ok(operand);
        }
        // `!(!x)` is `!!x`.
        match operand {
            Expr::Unary {
                ops: inner_ops,
                operand,
            } => {
                ops.extend(inner_ops);
                Ok(Expr::Unary { ops, operand })
            }
            operand => Ok(Expr::Unary {
                ops,
                operand: Box::new(operand),
            }),
        }
    }

    fn postfix(&mut self) -> Result<Expr, ExpressionError> {
        let root = self.primary()?;
        let mut segments = Vec::new();
        loop {
            match self.peek() {
                Tok::Dot => {
                    self.pos += 1;
                    match self.bump() {
                        Tok::Name(name) => segments.push(Segment::Name(name)),
                        _ => {
                            self.pos -= 1;
                            return Err(self.error("expected a property name after '.'"));
                        }
                    }
                }
                Tok::LBracket => {
                    self.pos += 1;
                    let index = self.conditional()?;
                    self.expect(&Tok::RBracket)?;
                    segments.push(Segment::Index(index));
                }
                Tok::LParen => return Err(self.error("function calls are not supported")),
                _ => break,
            }
        }
        if segments.is_empty() {
            return Ok(root);
        }
        // `(a.b).c` is `a.b.c`.
        match root {
            Expr::Path {
                root,
                segments: mut inner,
            } => {
                inner.extend(segments);
                Ok(Expr::Path {
                    root,
                    segments: inner,
                })
            }
            root => Ok(Expr::Path {
                root: Box::new(root),
                segments,
            }),
        }
    }

    fn primary(&mut self) -> Result<Expr, ExpressionError> {
        let expr = match self.peek() {
            Tok::Num(n) => Expr::Number(*n),
            Tok::Str(s) => Expr::String(s.clone()),
            Tok::True => Expr::Bool(true),
            Tok::False => Expr::Bool(false),
            Tok::Null => Expr::Null,
            Tok::Ident(name) => Expr::Ident(name.clone()),
            Tok::LParen => {
                self.pos += 1;
                let inner = self.conditional()?;
                self.expect(&Tok::RParen)?;
                return Ok(inner);
            }
            Tok::LBracket => {
                self.pos += 1;
                return self.array();
            }
            _ => return Err(self.unexpected()),
        };
        self.pos += 1;
        Ok(expr)
    }

    /// After `[`: elements with an optional trailing comma, then `]`.
    fn array(&mut self) -> Result<Expr, ExpressionError> {
        let mut items = Vec::new();
        while !self.eat(&Tok::RBracket) {
            if self.peek() == &Tok::Comma {
                return Err(self.error("array holes are not supported"));
            }
            items.push(self.conditional()?);
            if !self.eat(&Tok::Comma) {
                self.expect(&Tok::RBracket)?;
                break;
            }
        }
        Ok(Expr::Array(items))
    }
}

fn logical(op: LogicalOp, operands: Vec<Expr>) -> Expr {
    // `(a || b) || c` is `a || b || c`: flatten a same-operator first operand.
    let mut iter = operands.into_iter();
    let mut flat = match iter.next() {
        Some(Expr::Logical {
            op: inner_op,
            operands: inner,
        }) if inner_op == op => inner,
        Some(first) => vec![first],
        None => Vec::new(),
    };
    flat.extend(iter);
    Expr::Logical { op, operands: flat }
}
