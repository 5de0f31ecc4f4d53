//! The JSON line a run prints.

use std::fmt::Write as _;

/// A JSON object written field by field (no escaping beyond what strings
/// here need: quotes, backslashes and control characters).
pub(super) struct Json(String);

impl Json {
    pub(super) fn new() -> Self {
        Json(String::from("{"))
    }
    fn key(&mut self, k: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        let _ = write!(self.0, "\"{k}\":");
    }
    pub(super) fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        self.0.push('"');
        for c in v.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(self.0, "\\u{:04x}", c as u32);
                }
                c => self.0.push(c),
            }
        }
        self.0.push('"');
        self
    }
    pub(super) fn num(&mut self, k: &str, v: f64) -> &mut Self {
        self.key(k);
        if v.is_finite() {
            let _ = write!(self.0, "{}", (v * 1000.0).round() / 1000.0);
        } else {
            self.0.push_str("null");
        }
        self
    }
    pub(super) fn int(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        let _ = write!(self.0, "{v}");
        self
    }
    pub(super) fn opt(&mut self, k: &str, v: Option<f64>) -> &mut Self {
        match v {
            Some(v) => self.num(k, v),
            None => {
                self.key(k);
                self.0.push_str("null");
                self
            }
        }
    }
    pub(super) fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k);
        self.0.push_str(if v { "true" } else { "false" });
        self
    }
    pub(super) fn finish(&mut self) -> String {
        self.0.push('}');
        std::mem::take(&mut self.0)
    }
}
