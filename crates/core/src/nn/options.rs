//! Reads the camelCase option objects that come from TypeScript (and from model files) and
//! rejects what it does not know, naming the options it does.

use serde_json::{Map, Value};

use crate::{Error, Result};

/// The largest integer a size or count option may take: below 2^31, as every dimension is.
/// A config (or a model file) declaring `units: 4e12` is an error here, before anything is
/// allocated for it.
const MAX_DIM: f64 = crate::alloc::MAX_DIM as f64;

/// A JSON options object being consumed key by key.
pub struct Options {
    what: String,
    map: Map<String, Value>,
    known: Vec<&'static str>,
}

impl Options {
    /// Wraps `value` (must be an object, or null for "no options"); `what` prefixes errors.
    pub fn new(what: &str, value: &Value) -> Result<Self> {
        let map = match value {
            Value::Object(m) => m.clone(),
            Value::Null => Map::new(),
            other => {
                return Err(Error::Invalid(format!(
                    "{what}: expected an options object, got {other}"
                )))
            }
        };
        Ok(Options {
            what: what.to_string(),
            map,
            known: Vec::new(),
        })
    }

    fn take(&mut self, key: &'static str) -> Option<Value> {
        self.known.push(key);
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn bad(&self, key: &str, expected: &str, got: &Value) -> Error {
        Error::Invalid(format!("{}: option '{key}' must be {expected}, got {got}", self.what))
    }

    /// A non-negative integer option.
    pub fn usize(&mut self, key: &'static str) -> Result<Option<usize>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(f) if (0.0..=MAX_DIM).contains(&f) && f.fract() == 0.0 => Ok(Some(f as usize)),
                _ => Err(self.bad(key, "a non-negative integer below 2^31", &v)),
            },
        }
    }

    /// A positive integer option that must be present.
    pub fn required_positive(&mut self, key: &'static str) -> Result<usize> {
        match self.usize(key)? {
            Some(n) if n > 0 => Ok(n),
            Some(n) => Err(self.bad(key, "a positive integer", &Value::from(n))),
            None => Err(Error::Invalid(format!("{}: option '{key}' is required", self.what))),
        }
    }

    /// A number option.
    pub fn f32(&mut self, key: &'static str) -> Result<Option<f32>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(f) if f.is_finite() => Ok(Some(f as f32)),
                _ => Err(self.bad(key, "a finite number", &v)),
            },
        }
    }

    /// A number option kept in f64 (where the exact decimal a user wrote matters, as Keras'
    /// Python floats do in LAMB's `1 - beta`).
    pub fn f64(&mut self, key: &'static str) -> Result<Option<f64>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(f) if f.is_finite() => Ok(Some(f)),
                _ => Err(self.bad(key, "a finite number", &v)),
            },
        }
    }

    /// A boolean option.
    pub fn bool(&mut self, key: &'static str) -> Result<Option<bool>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(v) => Err(self.bad(key, "true or false", &v)),
        }
    }

    /// A string option.
    pub fn string(&mut self, key: &'static str) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.bad(key, "a string", &v)),
        }
    }

    /// Any JSON value (for nested specs such as initializers).
    pub fn value(&mut self, key: &'static str) -> Option<Value> {
        self.take(key)
    }

    /// A positive integer or a pair of them (`kernelSize: 3` or `[3, 3]`).
    pub fn pair(&mut self, key: &'static str) -> Result<Option<[usize; 2]>> {
        let Some(v) = self.take(key) else { return Ok(None) };
        let pair = match &v {
            Value::Array(a) if a.len() == 2 => dim(&a[0]).zip(dim(&a[1])).map(|(a, b)| [a, b]),
            other => dim(other).map(|n| [n, n]),
        };
        pair.map(Some)
            .ok_or_else(|| self.bad(key, "a positive integer below 2^31 or a pair of them", &v))
    }

    /// A shape: array of positive integers (`null` entries are not allowed).
    pub fn shape(&mut self, key: &'static str) -> Result<Option<Vec<usize>>> {
        let Some(v) = self.take(key) else { return Ok(None) };
        let dims = v.as_array().and_then(|a| a.iter().map(dim).collect::<Option<Vec<_>>>());
        dims.map(Some)
            .ok_or_else(|| self.bad(key, "an array of positive integers below 2^31", &v))
    }

    /// Errors if any option was not consumed.
    pub fn finish(self) -> Result<()> {
        if let Some(key) = self.map.keys().next() {
            let mut known = self.known.clone();
            known.sort_unstable();
            known.dedup();
            return Err(Error::Invalid(format!(
                "{}: unknown option '{key}'; expected one of: {}",
                self.what,
                known.join(", ")
            )));
        }
        Ok(())
    }
}

/// A positive integer below 2^31.
/// A positive integer below 2^31, as every size is.
pub(crate) fn dim(v: &Value) -> Option<usize> {
    v.as_f64()
        .filter(|f| (1.0..=MAX_DIM).contains(f) && f.fract() == 0.0)
        .map(|f| f as usize)
}

/// A non-negative integer below 2^31 (paddings, counts that may be 0).
pub(crate) fn count(v: &Value) -> Option<usize> {
    v.as_f64()
        .filter(|f| (0.0..=MAX_DIM).contains(f) && f.fract() == 0.0)
        .map(|f| f as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_and_mistyped_options_are_reported() {
        let mut o = Options::new("Dense", &json!({"units": 3, "unitz": 4})).unwrap();
        assert_eq!(o.required_positive("units").unwrap(), 3);
        let e = o.finish().unwrap_err().to_string();
        assert!(e.contains("unknown option 'unitz'") && e.contains("units"), "{e}");
        let mut o = Options::new("Conv2D", &json!({"kernelSize": "big"})).unwrap();
        let e = o.pair("kernelSize").unwrap_err().to_string();
        assert!(e.contains("kernelSize") && e.contains("\"big\""), "{e}");
    }

    #[test]
    fn sizes_are_positive_integers_below_2_pow_31() {
        for bad in [json!(4e12), json!(2147483648u64), json!(-1), json!(2.5), json!("3")] {
            let mut o = Options::new("Dense", &json!({ "units": bad.clone() })).unwrap();
            let e = o.required_positive("units").unwrap_err().to_string();
            assert!(e.contains("'units'") && e.contains("below 2^31"), "{bad}: {e}");
            let mut o = Options::new("Input", &json!({ "shape": [4, bad.clone()] })).unwrap();
            assert!(o.shape("shape").is_err(), "shape with {bad}");
            let mut o = Options::new("Conv2D", &json!({ "kernelSize": [bad.clone(), 3] })).unwrap();
            assert!(o.pair("kernelSize").is_err(), "kernelSize with {bad}");
        }
        let mut o = Options::new("Dense", &json!({"units": 2147483647u64})).unwrap();
        assert_eq!(o.required_positive("units").unwrap(), (1 << 31) - 1);
    }
}
