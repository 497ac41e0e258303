//! Tree-walking evaluator of the safe language.

use std::borrow::Cow;
use std::rc::Rc;

use super::EvalError;
use super::ast::{BinaryOp, Expr, LogicalOp, Segment, UnaryOp};
use super::scope::Scope;
use super::value::{Arr, Budget, Val, get_index, get_member, numeric_index, strict_eq};

pub(crate) struct Evaluator<'a, S: ?Sized> {
    scope: &'a S,
    budget: Budget,
}

impl<'a, S: Scope + ?Sized> Evaluator<'a, S> {
    pub(crate) fn new(scope: &'a S) -> Self {
        Evaluator {
            scope,
            budget: Budget::default(),
        }
    }

    pub(crate) fn eval(&mut self, expr: &'a Expr) -> Result<Val<'a>, EvalError> {
        Ok(match expr {
            Expr::Number(n) => Val::Num(*n),
            Expr::String(s) => Val::Str(Cow::Borrowed(s)),
            Expr::Bool(b) => Val::Bool(*b),
            Expr::Null => Val::Null,
            Expr::Ident(name) => self.identifier(name),
            Expr::Array(items) => {
                let mut values = Vec::with_capacity(items.len());
                for item in items {
                    values.push(self.eval(item)?);
                }
                Val::Arr(Arr::Literal(Rc::new(values)))
            }
            Expr::Path { root, segments } => {
                let mut current = self.eval(root)?;
                for segment in segments {
                    if current.is_nullish() {
                        return Err(EvalError::NullMember {
                            property: segment.describe(),
                            base: if matches!(current, Val::Null) {
                                "null"
                            } else {
                                "undefined"
                            },
                        });
                    }
                    current = match segment {
                        Segment::Name(name) => get_member(current, name),
                        Segment::Index(index) => {
                            let key = self.eval(index)?;
                            self.member(current, key)?
                        }
                    };
                }
                current
            }
            Expr::Unary { ops, operand } => {
                let mut value = self.eval(operand)?;
                for op in ops.iter().rev() {
                    value = match op {
                        UnaryOp::Not => Val::Bool(!value.truthy()),
                        UnaryOp::Neg => Val::Num(-self.budget.number_of(value)?),
                        UnaryOp::Plus => Val::Num(self.budget.number_of(value)?),
                    };
                }
                value
            }
            Expr::Binary { first, rest } => {
                let mut acc = self.eval(first)?;
                for (op, rhs) in rest {
                    let rhs = self.eval(rhs)?;
                    acc = self.binary(*op, acc, rhs)?;
                }
                acc
            }
            Expr::Logical { op, operands } => {
                let mut acc = Val::Undefined;
                for (i, operand) in operands.iter().enumerate() {
                    if i > 0 {
                        let done = match op {
                            LogicalOp::And => !acc.truthy(),
                            LogicalOp::Or => acc.truthy(),
                            LogicalOp::Coalesce => !acc.is_nullish(),
                        };
                        if done {
                            break;
                        }
                    }
                    acc = self.eval(operand)?;
                }
                acc
            }
            Expr::Conditional {
                test,
                then,
                otherwise,
            } => {
                if self.eval(test)?.truthy() {
                    self.eval(then)?
                } else {
                    self.eval(otherwise)?
                }
            }
        })
    }

    fn identifier(&self, name: &str) -> Val<'a> {
        match self.scope.lookup(name) {
            Some(value) => Val::from_scope(value),
            None => match name {
                "NaN" => Val::Num(f64::NAN),
                "Infinity" => Val::Num(f64::INFINITY),
                _ => Val::Undefined,
            },
        }
    }

    /// `base[key]` with JS `ToPropertyKey`.
    fn member(&mut self, base: Val<'a>, key: Val<'a>) -> Result<Val<'a>, EvalError> {
        if let Some(index) = numeric_index(&key) {
            return Ok(get_index(base, index));
        }
        let key = self.budget.string_of(key)?;
        Ok(get_member(base, &key))
    }

    fn binary(&mut self, op: BinaryOp, a: Val<'a>, b: Val<'a>) -> Result<Val<'a>, EvalError> {
        let budget = &mut self.budget;
        Ok(match op {
            BinaryOp::Add => return budget.add(a, b),
            BinaryOp::Sub => Val::Num(budget.number_of(a)? - budget.number_of(b)?),
            BinaryOp::Mul => Val::Num(budget.number_of(a)? * budget.number_of(b)?),
            BinaryOp::Div => Val::Num(budget.number_of(a)? / budget.number_of(b)?),
            BinaryOp::Rem => Val::Num(budget.number_of(a)? % budget.number_of(b)?),
            BinaryOp::Lt => Val::Bool(budget.less_than(a, b)? == Some(true)),
            BinaryOp::Gt => Val::Bool(budget.less_than(b, a)? == Some(true)),
            BinaryOp::Le => Val::Bool(budget.less_than(b, a)? == Some(false)),
            BinaryOp::Ge => Val::Bool(budget.less_than(a, b)? == Some(false)),
            BinaryOp::Eq => Val::Bool(budget.loose_eq(a, b)?),
            BinaryOp::NotEq => Val::Bool(!budget.loose_eq(a, b)?),
            BinaryOp::StrictEq => Val::Bool(strict_eq(&a, &b)),
            BinaryOp::StrictNotEq => Val::Bool(!strict_eq(&a, &b)),
        })
    }
}
