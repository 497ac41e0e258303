//! Tokenizer of the safe language.

use super::value::{is_js_whitespace, parse_radix};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    /// A property name right after a member `.` (digits allowed: `a.0`).
    Name(String),
    True,
    False,
    Null,
    Dot,
    LBracket,
    RBracket,
    LParen,
    RParen,
    Comma,
    Question,
    Colon,
    QuestionQuestion,
    AndAnd,
    OrOr,
    Bang,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Lt,
    Le,
    Gt,
    Ge,
    EqEq,
    NotEq,
    EqEqEq,
    NotEqEq,
    Eof,
}

impl Tok {
    /// The token as named in error messages.
    pub(crate) fn describe(&self) -> String {
        let symbol = match self {
            Tok::Num(n) => return format!("number {}", super::value::number_to_string(*n)),
            Tok::Str(_) => return "string literal".to_owned(),
            Tok::Ident(name) => return format!("identifier '{name}'"),
            Tok::Name(name) => return format!("'{name}'"),
            Tok::Eof => return "end of expression".to_owned(),
            Tok::True => "true",
            Tok::False => "false",
            Tok::Null => "null",
            Tok::Dot => ".",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Comma => ",",
            Tok::Question => "?",
            Tok::Colon => ":",
            Tok::QuestionQuestion => "??",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            Tok::Bang => "!",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Percent => "%",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::EqEq => "==",
            Tok::NotEq => "!=",
            Tok::EqEqEq => "===",
            Tok::NotEqEq => "!==",
        };
        format!("'{symbol}'")
    }

    /// Whether a `.` after this token is member access (not a number `.5`).
    fn ends_value(&self) -> bool {
        matches!(
            self,
            Tok::Num(_)
                | Tok::Str(_)
                | Tok::Ident(_)
                | Tok::Name(_)
                | Tok::True
                | Tok::False
                | Tok::Null
                | Tok::RParen
                | Tok::RBracket
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    /// Byte offset of the token's first character.
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError {
    pub offset: usize,
    pub message: String,
}

pub(crate) fn is_id_start(c: char) -> bool {
    c == '$' || c == '_' || c.is_alphabetic()
}

pub(crate) fn is_id_continue(c: char) -> bool {
    is_id_start(c) || c.is_alphanumeric() || c == '\u{200C}' || c == '\u{200D}'
}

struct Lexer<'s> {
    src: &'s str,
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.src[self.pos..].chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn error<T>(&self, offset: usize, message: impl Into<String>) -> Result<T, LexError> {
        Err(LexError {
            offset,
            message: message.into(),
        })
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if !f(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.src[start..self.pos]
    }

    fn number(&mut self, start: usize) -> Result<f64, LexError> {
        let radix = match (self.peek(), self.peek_at(1)) {
            (Some('0'), Some('x' | 'X')) => Some(16),
            (Some('0'), Some('o' | 'O')) => Some(8),
            (Some('0'), Some('b' | 'B')) => Some(2),
            _ => None,
        };
        let value = if let Some(radix) = radix {
            self.pos += 2;
            let digits = self.take_while(|c| c.is_ascii_alphanumeric());
            match parse_radix(digits, radix) {
                Some(value) => value,
                None => return self.error(start, "invalid number literal"),
            }
        } else {
            self.take_while(|c| c.is_ascii_digit());
            let int_part = &self.src[start..self.pos];
            if int_part.len() > 1 && int_part.starts_with('0') {
                return self.error(start, "numbers with leading zeros are not supported");
            }
            if self.eat('.') {
                self.take_while(|c| c.is_ascii_digit());
            }
            if matches!(self.peek(), Some('e' | 'E')) {
                self.pos += 1;
                if !self.eat('+') {
                    self.eat('-');
                }
                if self.take_while(|c| c.is_ascii_digit()).is_empty() {
                    return self.error(start, "missing exponent digits in number literal");
                }
            }
            match self.src[start..self.pos].parse::<f64>() {
                Ok(value) => value,
                Err(_) => return self.error(start, "invalid number literal"),
            }
        };
        if let Some(c) = self.peek()
            && (is_id_start(c) || c.is_ascii_digit())
        {
            return self.error(self.pos, "identifier starts immediately after number");
        }
        Ok(value)
    }

    fn hex_digits(&mut self, count: usize, escape_start: usize) -> Result<u32, LexError> {
        let mut value = 0u32;
        for _ in 0..count {
            match self.peek().and_then(|c| c.to_digit(16)) {
                Some(d) => {
                    self.pos += 1;
                    value = value * 16 + d;
                }
                None => return self.error(escape_start, "invalid escape sequence"),
            }
        }
        Ok(value)
    }

    /// `\u` escape after the `u`: `HHHH` or `{H...}`; returns the code point
    /// or UTF-16 unit.
    fn unicode_escape(&mut self, escape_start: usize) -> Result<u32, LexError> {
        if self.eat('{') {
            let digits = self.take_while(|c| c.is_ascii_hexdigit());
            let value = if digits.is_empty() || digits.len() > 6 {
                None
            } else {
                u32::from_str_radix(digits, 16)
                    .ok()
                    .filter(|v| *v <= 0x10FFFF)
            };
            match value {
                Some(value) if self.eat('}') => Ok(value),
                _ => self.error(escape_start, "invalid escape sequence"),
            }
        } else {
            self.hex_digits(4, escape_start)
        }
    }

    fn string(&mut self, start: usize, quote: char) -> Result<String, LexError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.bump() else {
                return self.error(start, "unterminated string literal");
            };
            match c {
                c if c == quote => return Ok(out),
                '\n' | '\r' => return self.error(start, "unterminated string literal"),
                '\\' => {
                    let escape_start = self.pos - 1;
                    let Some(e) = self.bump() else {
                        return self.error(start, "unterminated string literal");
                    };
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{C}'),
                        'v' => out.push('\u{B}'),
                        '0' if !self.peek().is_some_and(|c| c.is_ascii_digit()) => out.push('\0'),
                        '0'..='9' => {
                            return self
                                .error(escape_start, "octal escape sequences are not supported");
                        }
                        'x' => {
                            let value = self.hex_digits(2, escape_start)?;
                            out.push(char::from_u32(value).unwrap_or('\u{FFFD}'));
                        }
                        'u' => {
                            let unit = self.unicode_escape(escape_start)?;
                            out.push(self.surrogate_pair(unit, escape_start)?);
                        }
                        // Line continuation.
                        '\n' | '\u{2028}' | '\u{2029}' => {}
                        '\r' => {
                            self.eat('\n');
                        }
                        other => out.push(other),
                    }
                }
                c => out.push(c),
            }
        }
    }

    /// Combines a high surrogate with a following `\uDC00`-`\uDFFF` escape;
    /// lone surrogates become U+FFFD.
    fn surrogate_pair(&mut self, unit: u32, escape_start: usize) -> Result<char, LexError> {
        if (0xD800..0xDC00).contains(&unit) && self.src[self.pos..].starts_with("\\u") {
            let save = self.pos;
            self.pos += 2;
            let low = self.unicode_escape(escape_start)?;
            if (0xDC00..0xE000).contains(&low) {
                let c = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                return Ok(char::from_u32(c).unwrap_or('\u{FFFD}'));
            }
            self.pos = save;
        }
        Ok(char::from_u32(unit).unwrap_or('\u{FFFD}'))
    }
}

/// Splits `src` into tokens, ending with [`Tok::Eof`].
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, LexError> {
    let mut lx = Lexer { src, pos: 0 };
    let mut tokens: Vec<Token> = Vec::new();
    loop {
        lx.take_while(is_js_whitespace);
        let offset = lx.pos;
        let Some(c) = lx.peek() else {
            tokens.push(Token {
                tok: Tok::Eof,
                offset,
            });
            return Ok(tokens);
        };
        let previous = tokens.last().map(|t| &t.tok);
        if previous == Some(&Tok::Dot) && is_id_continue(c) {
            let name = lx.take_while(is_id_continue).to_owned();
            tokens.push(Token {
                tok: Tok::Name(name),
                offset,
            });
            continue;
        }
        let after_value = previous.is_some_and(Tok::ends_value);
        let next = lx.peek_at(1);
        let tok = match c {
            '0'..='9' => Tok::Num(lx.number(offset)?),
            '.' if !after_value && next.is_some_and(|d| d.is_ascii_digit()) => {
                Tok::Num(lx.number(offset)?)
            }
            '"' | '\'' => Tok::Str(lx.string(offset, c)?),
            c if is_id_start(c) => {
                let word = lx.take_while(is_id_continue);
                match word {
                    "true" => Tok::True,
                    "false" => Tok::False,
                    "null" => Tok::Null,
                    _ => Tok::Ident(word.to_owned()),
                }
            }
            _ => {
                let (tok, len) = match (c, next, lx.peek_at(2)) {
                    ('=', Some('='), Some('=')) => (Tok::EqEqEq, 3),
                    ('!', Some('='), Some('=')) => (Tok::NotEqEq, 3),
                    ('=', Some('='), _) => (Tok::EqEq, 2),
                    ('!', Some('='), _) => (Tok::NotEq, 2),
                    ('<', Some('='), _) => (Tok::Le, 2),
                    ('>', Some('='), _) => (Tok::Ge, 2),
                    ('&', Some('&'), _) => (Tok::AndAnd, 2),
                    ('|', Some('|'), _) => (Tok::OrOr, 2),
                    ('?', Some('?'), _) => (Tok::QuestionQuestion, 2),
                    ('.', ..) => (Tok::Dot, 1),
                    ('[', ..) => (Tok::LBracket, 1),
                    (']', ..) => (Tok::RBracket, 1),
                    ('(', ..) => (Tok::LParen, 1),
                    (')', ..) => (Tok::RParen, 1),
                    (',', ..) => (Tok::Comma, 1),
                    ('?', ..) => (Tok::Question, 1),
                    (':', ..) => (Tok::Colon, 1),
                    ('!', ..) => (Tok::Bang, 1),
                    ('+', ..) => (Tok::Plus, 1),
                    ('-', ..) => (Tok::Minus, 1),
                    ('*', ..) => (Tok::Star, 1),
                    ('/', ..) => (Tok::Slash, 1),
                    ('%', ..) => (Tok::Percent, 1),
                    ('<', ..) => (Tok::Lt, 1),
                    ('>', ..) => (Tok::Gt, 1),
                    ('=', ..) => {
                        return lx.error(
                            offset,
                            "'=' (assignment) is not supported; use '==' or '==='",
                        );
                    }
                    ('&', ..) => return lx.error(offset, "'&' is not supported; use '&&'"),
                    ('|', ..) => return lx.error(offset, "'|' is not supported; use '||'"),
                    ('`', ..) => return lx.error(offset, "template literals are not supported"),
                    (c, ..) => return lx.error(offset, format!("unexpected character {c:?}")),
                };
                lx.pos += len;
                tok
            }
        };
        tokens.push(Token { tok, offset });
    }
}
