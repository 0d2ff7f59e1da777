//! The one seam between the typed methods of [`crate::Tx`] and the two database drivers.
//!
//! Every typed method is written once against [`Exec`]: SQL text with numbered `?N`
//! placeholders (rewritten to `$N` for PostgreSQL, once per statement and connection), parameters
//! as borrowed [`Param`]s built by [`params!`](crate::params), and result rows read through
//! [`Row::get`], which converts an owned [`Value`] the way rusqlite's `Row::get` did.
//!
//! The SQL is kept valid in both dialects: `ON CONFLICT … DO NOTHING` instead of `INSERT OR
//! IGNORE`, `CAST(? AS TEXT)` where PostgreSQL could not infer a parameter's type, no `SUM` over a
//! `BIGINT` without a `CAST` back to `BIGINT` (PostgreSQL answers `NUMERIC`), integers instead of
//! booleans in tables, and an explicit `rowid` identity column in PostgreSQL's tables wherever
//! SQLite's implicit `rowid` orders a list.

use crate::{Error, Result};

/// A parameter, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// A column value, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "integer",
            Value::Text(_) => "text",
            Value::Blob(_) => "blob",
        }
    }
}

/// Values that can be passed as a parameter.
pub(crate) trait ToParam {
    fn to_param(&self) -> Param<'_>;
}

impl ToParam for str {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}
impl ToParam for String {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}
impl ToParam for [u8] {
    fn to_param(&self) -> Param<'_> {
        Param::Blob(self)
    }
}
impl ToParam for Vec<u8> {
    fn to_param(&self) -> Param<'_> {
        Param::Blob(self)
    }
}
impl ToParam for i64 {
    fn to_param(&self) -> Param<'_> {
        Param::Int(*self)
    }
}
impl ToParam for u32 {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}
impl ToParam for bool {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}
impl<T: ToParam + ?Sized> ToParam for &T {
    fn to_param(&self) -> Param<'_> {
        (**self).to_param()
    }
}
impl<T: ToParam> ToParam for Option<T> {
    fn to_param(&self) -> Param<'_> {
        match self {
            Some(v) => v.to_param(),
            None => Param::Null,
        }
    }
}

/// `params![a, b, …]`: an array of [`Param`]s borrowing the expressions.
macro_rules! params {
    () => {{
        let p: [$crate::db::Param<'_>; 0] = [];
        p
    }};
    ($($x:expr),+ $(,)?) => {
        [$($crate::db::ToParam::to_param(&$x)),+]
    };
}
pub(crate) use params;

/// Column types a [`Row`] converts to.
pub(crate) trait FromValue: Sized {
    fn from_value(v: Value) -> Result<Self>;
}

fn mismatch(want: &str, got: &Value) -> Error {
    Error::Sql(format!("expected {want}, found {}", got.kind()))
}

impl FromValue for Value {
    fn from_value(v: Value) -> Result<Self> {
        Ok(v)
    }
}
impl FromValue for i64 {
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Int(i) => Ok(i),
            other => Err(mismatch("integer", &other)),
        }
    }
}
impl FromValue for u32 {
    fn from_value(v: Value) -> Result<Self> {
        let i = i64::from_value(v)?;
        u32::try_from(i).map_err(|_| Error::Sql(format!("{i} is out of range")))
    }
}
impl FromValue for bool {
    fn from_value(v: Value) -> Result<Self> {
        Ok(i64::from_value(v)? != 0)
    }
}
impl FromValue for String {
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Text(s) => Ok(s),
            other => Err(mismatch("text", &other)),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Blob(b) => Ok(b),
            // SQLite hands out text for a blob column only if text was stored; accept it.
            Value::Text(s) => Ok(s.into_bytes()),
            other => Err(mismatch("blob", &other)),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// One result row, valid inside the callback it is passed to.
pub(crate) enum Row<'r> {
    Lite(&'r rusqlite::Row<'r>),
    Pg(&'r tokio_postgres::Row),
}

impl Row<'_> {
    fn value(&self, i: usize) -> Result<Value> {
        match self {
            Row::Lite(r) => {
                use rusqlite::types::ValueRef;
                Ok(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::Int(n),
                    ValueRef::Real(f) => {
                        return Err(Error::Sql(format!("unexpected real value {f}")));
                    }
                    ValueRef::Text(t) => Value::Text(
                        String::from_utf8(t.to_vec())
                            .map_err(|_| Error::Corrupt("text is not UTF-8".into()))?,
                    ),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                })
            }
            Row::Pg(r) => r.try_get::<_, Value>(i).map_err(crate::pg::map_error),
        }
    }

    /// Column `i` converted to `T` (the index type parameter mirrors rusqlite's `get`).
    pub(crate) fn get<I: ColumnIndex, T: FromValue>(&self, i: I) -> Result<T> {
        T::from_value(self.value(i.index())?)
    }
}

/// A column position (only `usize`: keeps `r.get(0)` inferring as with rusqlite).
pub(crate) trait ColumnIndex {
    fn index(self) -> usize;
}
impl ColumnIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// The statement runner the typed methods use, shaped like the slice of rusqlite's API they were
/// written against (`prepare_cached(sql)?.execute(params![…])`, `query_row`, `query_map`,
/// `.optional()`), so that one body serves both backends.
#[derive(Clone, Copy)]
pub(crate) struct Conn<'a> {
    db: &'a (dyn Exec + 'a),
}

impl<'a> Conn<'a> {
    pub(crate) fn new(db: &'a (dyn Exec + 'a)) -> Self {
        Conn { db }
    }

    /// The transaction underneath.
    pub(crate) fn exec(&self) -> &'a (dyn Exec + 'a) {
        self.db
    }

    /// A statement (both backends cache prepared statements per connection).
    pub(crate) fn prepare_cached(&self, sql: &str) -> Result<Stmt<'a>> {
        Ok(Stmt {
            db: self.db,
            sql: sql.to_owned(),
        })
    }

    /// Same as [`Conn::prepare_cached`].
    pub(crate) fn prepare(&self, sql: &str) -> Result<Stmt<'a>> {
        self.prepare_cached(sql)
    }
}

/// A statement about to run.
pub(crate) struct Stmt<'a> {
    db: &'a (dyn Exec + 'a),
    sql: String,
}

impl Stmt<'_> {
    /// Runs it; returns the number of rows changed.
    pub(crate) fn execute<'p, P: AsRef<[Param<'p>]>>(&mut self, p: P) -> Result<usize> {
        self.db.execute(&self.sql, p.as_ref())
    }

    /// The first row mapped by `f`; [`Error::NotFound`] when there is none.
    pub(crate) fn query_row<'p, T, P, F>(&mut self, p: P, f: F) -> Result<T>
    where
        P: AsRef<[Param<'p>]>,
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        let mut f = Some(f);
        let mut out = None;
        self.db.query_each(&self.sql, p.as_ref(), &mut |r| {
            if let Some(f) = f.take() {
                out = Some(f(r)?);
            }
            Ok(false)
        })?;
        out.ok_or(Error::NotFound)
    }

    /// Every row mapped by `f`.
    pub(crate) fn query_map<'p, T, P, F>(
        &mut self,
        p: P,
        mut f: F,
    ) -> Result<std::vec::IntoIter<Result<T>>>
    where
        P: AsRef<[Param<'p>]>,
        F: FnMut(&Row<'_>) -> Result<T>,
    {
        let mut out = Vec::new();
        self.db.query_each(&self.sql, p.as_ref(), &mut |r| {
            out.push(Ok(f(r)?));
            Ok(true)
        })?;
        Ok(out.into_iter())
    }
}

/// rusqlite's `OptionalExtension`: no row is `None`, not an error.
pub(crate) trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What a statement runs on: an open transaction of either backend.
pub(crate) trait Exec {
    /// Runs a statement; returns the number of rows it changed.
    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<usize>;
    /// Runs a query and hands each row to `f` until it returns `false`.
    fn query_each(
        &self,
        sql: &str,
        params: &[Param<'_>],
        f: &mut dyn FnMut(&Row<'_>) -> Result<bool>,
    ) -> Result<()>;
    /// Runs SQL without parameters (one or more statements).
    fn batch(&self, sql: &str) -> Result<()>;
    /// Runs one parameterless statement run many times (a savepoint): SQLite keeps it prepared
    /// instead of parsing it again on every job of every batch.
    fn repeat(&self, sql: &str) -> Result<()> {
        self.batch(sql)
    }
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Null => ValueRef::Null,
            Param::Int(i) => ValueRef::Integer(i),
            Param::Text(s) => ValueRef::Text(s.as_bytes()),
            Param::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// The SQLite side: a connection inside an open transaction.
impl Exec for rusqlite::Connection {
    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<usize> {
        Ok(self
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(params.iter()))?)
    }

    fn query_each(
        &self,
        sql: &str,
        params: &[Param<'_>],
        f: &mut dyn FnMut(&Row<'_>) -> Result<bool>,
    ) -> Result<()> {
        let mut st = self.prepare_cached(sql)?;
        let mut rows = st.query(rusqlite::params_from_iter(params.iter()))?;
        while let Some(r) = rows.next()? {
            if !f(&Row::Lite(r))? {
                break;
            }
        }
        Ok(())
    }

    fn batch(&self, sql: &str) -> Result<()> {
        Ok(self.execute_batch(sql)?)
    }

    fn repeat(&self, sql: &str) -> Result<()> {
        self.prepare_cached(sql)?.execute([])?;
        Ok(())
    }
}

/// Rewrites `?N` placeholders to PostgreSQL's `$N` (outside quoted strings and identifiers).
pub(crate) fn to_dollar(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                out.push(c);
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    out.push(c);
                }
                '?' if chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
                _ => out.push(c),
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::to_dollar;

    #[test]
    fn placeholders_are_rewritten_outside_quotes_only() {
        assert_eq!(
            to_dollar("SELECT a FROM t WHERE x = ?1 AND y = '?2' AND (?12 IS NULL OR z = ?12)"),
            "SELECT a FROM t WHERE x = $1 AND y = '?2' AND ($12 IS NULL OR z = $12)"
        );
        assert_eq!(to_dollar("SELECT '?' , \"?3\" ?"), "SELECT '?' , \"?3\" ?");
    }
}
