//! Just enough of MySQL/MariaDB DDL to follow a table's columns: CREATE
//! TABLE (column definitions, primary key, LIKE), ALTER TABLE (ADD, DROP,
//! MODIFY, CHANGE and RENAME COLUMN, RENAME TO, ADD/DROP PRIMARY KEY),
//! DROP TABLE, RENAME TABLE and DROP DATABASE. Everything else a statement
//! may say (indexes, constraints, options, partitions) is skipped. The
//! input is the server's own statement text from the binlog or from SHOW
//! CREATE TABLE; versioned comments (`/*!50100 … */`, `/*M!100100 … */`)
//! are read as code, as the server reads them.

use std::fmt;

/// A table name, its database filled in from the statement's default.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name {
    pub db: String,
    pub table: String,
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.db, self.table)
    }
}

/// One column as a definition states it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ColumnDef {
    pub name: String,
    /// The type name, lower case (`int`, `varchar`, `enum`, …).
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsigned: bool,
    /// ENUM or SET labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Where ADD, MODIFY or CHANGE puts a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Keep,
    First,
    After(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterOp {
    Add(ColumnDef, Place),
    Drop(String),
    /// MODIFY (same name) and CHANGE (old name, new definition).
    Redefine(String, ColumnDef, Place),
    RenameColumn(String, String),
    RenameTable(Name),
    AddPrimaryKey(Vec<String>),
    DropPrimaryKey,
}

/// A statement, as far as column tracking cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ddl {
    Create {
        name: Name,
        columns: Vec<ColumnDef>,
        primary_key: Vec<String>,
    },
    CreateLike {
        name: Name,
        like: Name,
    },
    Alter {
        name: Name,
        ops: Vec<AlterOp>,
    },
    Drop(Vec<Name>),
    Rename(Vec<(Name, Name)>),
    DropDatabase(String),
    /// Does not change any table's columns (views, indexes, grants, …).
    None,
}

/// A statement about `table` that could not be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} (at byte {offset})")]
pub struct DdlError {
    /// The table the statement is about, when that much was read.
    pub table: Option<Name>,
    pub offset: usize,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An unquoted word, as written.
    Word(String),
    /// A `quoted` identifier.
    Ident(String),
    Str(String),
    Num(String),
    Sym(char),
}

/// Parses one statement; `default_db` is the session's database.
pub fn parse(sql: &str, default_db: &str) -> Result<Ddl, DdlError> {
    let toks = lex(sql).map_err(|(offset, what)| DdlError { table: None, offset, what })?;
    let mut p = Parser { toks, i: 0, db: default_db, table: None };
    p.statement().map_err(|(offset, what)| DdlError { table: p.table.clone(), offset, what })
}

type Fail = (usize, String);

fn lex(sql: &str) -> Result<Vec<(usize, Tok)>, Fail> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'#'
            || (c == b'-' && b.get(i + 1) == Some(&b'-') && b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()))
        {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            // `/*!NNNNN` and `/*M!NNNNNN` open code; any other comment is skipped.
            let rest = &b[i + 2..];
            let code = rest.first() == Some(&b'!') || rest.starts_with(b"M!");
            if code {
                i += 2 + rest.iter().position(|&c| c == b'!').unwrap_or(0) + 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            } else {
                let end = sql[i + 2..].find("*/").ok_or((start, "an unterminated comment".to_owned()))?;
                i += 2 + end + 2;
            }
        } else if c == b'*' && b.get(i + 1) == Some(&b'/') {
            i += 2; // the end of a versioned comment
        } else if c == b'`' || c == b'\'' || c == b'"' {
            let (text, next) = quoted(sql, i).ok_or((start, format!("an unterminated {} quote", c as char)))?;
            out.push((start, if c == b'`' { Tok::Ident(text) } else { Tok::Str(text) }));
            i = next;
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
            let text = &sql[start..i];
            // `1e2x` or `2abc` are identifiers in MySQL; only all-digit words are numbers.
            out.push((
                start,
                match text.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
                    true => Tok::Num(text.to_owned()),
                    false => Tok::Word(text.to_owned()),
                },
            ));
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c >= 0x80 {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80) {
                i += 1;
            }
            out.push((start, Tok::Word(sql[start..i].to_owned())));
        } else {
            out.push((start, Tok::Sym(c as char)));
            i += 1;
        }
    }
    Ok(out)
}

/// A quoted run starting at `at`: doubled quotes and (outside backticks)
/// backslash escapes; returns the text and the index after the closing quote.
fn quoted(sql: &str, at: usize) -> Option<(String, usize)> {
    let b = sql.as_bytes();
    let q = b[at];
    let mut out = Vec::new();
    let mut i = at + 1;
    while i < b.len() {
        match b[i] {
            c if c == q && b.get(i + 1) == Some(&q) => {
                out.push(q);
                i += 2;
            }
            c if c == q => return Some((String::from_utf8_lossy(&out).into_owned(), i + 1)),
            b'\\' if q != b'`' && i + 1 < b.len() => {
                out.push(match b[i + 1] {
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'0' => 0,
                    c => c,
                });
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    None
}

/// Words that open a constraint or index inside a table definition.
const CONSTRAINT_WORDS: &[&str] =
    &["PRIMARY", "KEY", "INDEX", "UNIQUE", "CONSTRAINT", "FOREIGN", "FULLTEXT", "SPATIAL", "CHECK", "PERIOD", "LIKE"];

struct Parser<'a> {
    toks: Vec<(usize, Tok)>,
    i: usize,
    db: &'a str,
    table: Option<Name>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.1)
    }

    fn offset(&self) -> usize {
        self.toks.get(self.i).map_or_else(|| self.toks.last().map_or(0, |t| t.0 + 1), |t| t.0)
    }

    fn fail<T>(&self, what: impl Into<String>) -> Result<T, Fail> {
        Err((self.offset(), what.into()))
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
    }

    fn eat_word(&mut self, w: &str) -> bool {
        let hit = self.is_word(w);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn eat_words(&mut self, ws: &[&str]) -> bool {
        let save = self.i;
        if ws.iter().all(|w| self.eat_word(w)) {
            return true;
        }
        self.i = save;
        false
    }

    fn eat_sym(&mut self, c: char) -> bool {
        let hit = self.peek() == Some(&Tok::Sym(c));
        if hit {
            self.i += 1;
        }
        hit
    }

    fn expect_sym(&mut self, c: char) -> Result<(), Fail> {
        if self.eat_sym(c) { Ok(()) } else { self.fail(format!("expected '{c}'")) }
    }

    fn ident(&mut self, what: &str) -> Result<String, Fail> {
        match self.peek().cloned() {
            Some(Tok::Word(w) | Tok::Ident(w)) => {
                self.i += 1;
                Ok(w)
            }
            Some(Tok::Str(s)) => {
                self.i += 1;
                Ok(s)
            }
            _ => self.fail(format!("expected {what}")),
        }
    }

    fn name(&mut self) -> Result<Name, Fail> {
        let first = self.ident("a table name")?;
        if self.eat_sym('.') {
            let table = self.ident("a table name after the database")?;
            return Ok(Name { db: first, table });
        }
        Ok(Name { db: self.db.to_owned(), table: first })
    }

    fn table_name(&mut self) -> Result<Name, Fail> {
        let n = self.name()?;
        self.table = Some(n.clone());
        Ok(n)
    }

    /// Skips to the end of the current list item: the next `,` or `)` at
    /// this depth (not consumed), or the end.
    fn skip_item(&mut self) -> Result<(), Fail> {
        let mut depth = 0usize;
        while let Some(t) = self.peek() {
            match t {
                Tok::Sym('(') => depth += 1,
                Tok::Sym(')') if depth == 0 => return Ok(()),
                Tok::Sym(')') => depth -= 1,
                Tok::Sym(',') if depth == 0 => return Ok(()),
                Tok::Sym(';') if depth == 0 => return Ok(()),
                _ => {}
            }
            self.i += 1;
        }
        Ok(())
    }

    fn statement(&mut self) -> Result<Ddl, Fail> {
        if self.eat_word("CREATE") {
            self.eat_words(&["OR", "REPLACE"]);
            if self.eat_word("TEMPORARY") {
                return Ok(Ddl::None); // session-local; never in a row-based binlog
            }
            if !self.eat_word("TABLE") {
                return Ok(Ddl::None);
            }
            self.eat_words(&["IF", "NOT", "EXISTS"]);
            return self.create();
        }
        if self.eat_word("ALTER") {
            self.eat_word("ONLINE");
            self.eat_word("IGNORE");
            if !self.eat_word("TABLE") {
                return Ok(Ddl::None);
            }
            self.eat_words(&["IF", "EXISTS"]);
            let name = self.table_name()?;
            let mut ops = Vec::new();
            loop {
                if self.peek().is_none() || self.eat_sym(';') {
                    break;
                }
                ops.extend(self.alter_op()?);
                self.skip_item()?;
                if !self.eat_sym(',') {
                    break;
                }
            }
            return Ok(Ddl::Alter { name, ops });
        }
        if self.eat_word("DROP") {
            self.eat_word("TEMPORARY");
            if self.eat_word("DATABASE") || self.eat_word("SCHEMA") {
                self.eat_words(&["IF", "EXISTS"]);
                return Ok(Ddl::DropDatabase(self.ident("a database name")?));
            }
            if !self.eat_word("TABLE") {
                return Ok(Ddl::None);
            }
            self.eat_words(&["IF", "EXISTS"]);
            let mut names = vec![self.table_name()?];
            while self.eat_sym(',') {
                names.push(self.table_name()?);
            }
            return Ok(Ddl::Drop(names));
        }
        if self.eat_word("RENAME") {
            if !self.eat_word("TABLE") {
                return Ok(Ddl::None);
            }
            let mut pairs = Vec::new();
            loop {
                let from = self.table_name()?;
                if !self.eat_word("TO") {
                    return self.fail("expected TO");
                }
                pairs.push((from, self.name()?));
                if !self.eat_sym(',') {
                    break;
                }
            }
            return Ok(Ddl::Rename(pairs));
        }
        Ok(Ddl::None)
    }

    fn create(&mut self) -> Result<Ddl, Fail> {
        let name = self.table_name()?;
        if self.eat_word("LIKE") {
            return Ok(Ddl::CreateLike { name, like: self.name()? });
        }
        if !self.eat_sym('(') {
            return self.fail("expected the column list");
        }
        if self.eat_word("LIKE") {
            return Ok(Ddl::CreateLike { name, like: self.name()? });
        }
        let (mut columns, mut primary_key) = (Vec::new(), Vec::new());
        loop {
            if self.starts_constraint() {
                if let Some(pk) = self.constraint()? {
                    primary_key = pk;
                }
            } else {
                let (col, pk) = self.column()?;
                if pk {
                    primary_key = vec![col.name.clone()];
                }
                columns.push(col);
            }
            self.skip_item()?;
            if self.eat_sym(')') {
                break;
            }
            if !self.eat_sym(',') {
                return self.fail("expected ',' or ')' in the column list");
            }
        }
        Ok(Ddl::Create { name, columns, primary_key })
    }

    fn starts_constraint(&self) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if CONSTRAINT_WORDS.iter().any(|c| w.eq_ignore_ascii_case(c)))
    }

    /// A table constraint; the primary key's columns when it is that.
    fn constraint(&mut self) -> Result<Option<Vec<String>>, Fail> {
        if self.eat_word("CONSTRAINT") && !self.is_word("PRIMARY") {
            // CONSTRAINT [symbol] …: the symbol may be any identifier.
            if !self.starts_constraint() {
                self.i += 1;
            }
        }
        if !self.eat_words(&["PRIMARY", "KEY"]) {
            return Ok(None);
        }
        // An optional index name or type before the column list.
        while !matches!(self.peek(), Some(Tok::Sym('(')) | None) {
            self.i += 1;
        }
        self.key_columns().map(Some)
    }

    /// `(a, b(10), c DESC)`
    fn key_columns(&mut self) -> Result<Vec<String>, Fail> {
        self.expect_sym('(')?;
        let mut cols = Vec::new();
        loop {
            cols.push(self.ident("a key column")?);
            self.skip_item()?;
            if self.eat_sym(')') {
                return Ok(cols);
            }
            self.expect_sym(',')?;
        }
    }

    /// A column definition; true when it declares itself the primary key.
    fn column(&mut self) -> Result<(ColumnDef, bool), Fail> {
        let name = self.ident("a column name")?;
        let ty = match self.peek().cloned() {
            Some(Tok::Word(w)) => {
                self.i += 1;
                w.to_ascii_lowercase()
            }
            _ => return self.fail(format!("column {name}: expected a type")),
        };
        let mut col = ColumnDef { name, ty, unsigned: false, values: Vec::new() };
        // `DOUBLE PRECISION`, `CHARACTER VARYING`, `LONG VARCHAR`, …
        if let Some(Tok::Word(w)) = self.peek()
            && matches!(w.to_ascii_uppercase().as_str(), "PRECISION" | "VARYING" | "VARCHAR" | "VARBINARY")
        {
            self.i += 1;
        }
        if self.eat_sym('(') {
            let mut depth = 0usize;
            while let Some(t) = self.peek().cloned() {
                self.i += 1;
                match t {
                    Tok::Sym('(') => depth += 1,
                    Tok::Sym(')') if depth == 0 => break,
                    Tok::Sym(')') => depth -= 1,
                    Tok::Str(s) if matches!(col.ty.as_str(), "enum" | "set") => col.values.push(s),
                    _ => {}
                }
            }
        }
        let mut pk = false;
        let mut depth = 0usize;
        while let Some(t) = self.peek() {
            match t {
                Tok::Sym('(') => depth += 1,
                Tok::Sym(')') if depth == 0 => break,
                Tok::Sym(')') => depth -= 1,
                Tok::Sym(',' | ';') if depth == 0 => break,
                Tok::Word(w) if depth == 0 => {
                    if w.eq_ignore_ascii_case("UNSIGNED") {
                        col.unsigned = true;
                    } else if w.eq_ignore_ascii_case("PRIMARY") {
                        pk = true;
                    } else if matches!(w.to_ascii_uppercase().as_str(), "FIRST" | "AFTER") {
                        break; // the placement, read by the caller
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
        Ok((col, pk))
    }

    fn place(&mut self) -> Result<Place, Fail> {
        if self.eat_word("FIRST") {
            return Ok(Place::First);
        }
        if self.eat_word("AFTER") {
            return Ok(Place::After(self.ident("a column after AFTER")?));
        }
        Ok(Place::Keep)
    }

    /// One ALTER TABLE clause: nothing for those that leave the columns
    /// alone, several for `ADD (a INT, b INT)`.
    fn alter_op(&mut self) -> Result<Vec<AlterOp>, Fail> {
        if self.eat_word("ADD") {
            if self.is_word("COLUMN") || !self.starts_constraint() && !self.is_word("PARTITION") {
                self.eat_word("COLUMN");
                self.eat_words(&["IF", "NOT", "EXISTS"]);
                if self.eat_sym('(') {
                    // ADD (a INT, b INT): several at the end, in order.
                    let mut cols = Vec::new();
                    loop {
                        cols.push(self.column()?.0);
                        self.skip_item()?;
                        if self.eat_sym(')') {
                            break;
                        }
                        self.expect_sym(',')?;
                    }
                    return Ok(cols.into_iter().map(|c| AlterOp::Add(c, Place::Keep)).collect());
                }
                let (col, _) = self.column()?;
                return Ok(vec![AlterOp::Add(col, self.place()?)]);
            }
            return Ok(self.constraint()?.map(AlterOp::AddPrimaryKey).into_iter().collect());
        }
        if self.eat_word("DROP") {
            if self.eat_words(&["PRIMARY", "KEY"]) {
                return Ok(vec![AlterOp::DropPrimaryKey]);
            }
            if self.starts_constraint() || ["PARTITION", "SYSTEM", "DEFAULT"].iter().any(|w| self.is_word(w)) {
                return Ok(Vec::new());
            }
            self.eat_word("COLUMN");
            self.eat_words(&["IF", "EXISTS"]);
            return Ok(vec![AlterOp::Drop(self.ident("a column to drop")?)]);
        }
        if self.eat_word("MODIFY") {
            self.eat_word("COLUMN");
            self.eat_words(&["IF", "EXISTS"]);
            let (col, _) = self.column()?;
            let place = self.place()?;
            return Ok(vec![AlterOp::Redefine(col.name.clone(), col, place)]);
        }
        if self.eat_word("CHANGE") {
            self.eat_word("COLUMN");
            self.eat_words(&["IF", "EXISTS"]);
            let old = self.ident("the column to change")?;
            let (col, _) = self.column()?;
            return Ok(vec![AlterOp::Redefine(old, col, self.place()?)]);
        }
        if self.eat_word("RENAME") {
            if self.eat_word("COLUMN") {
                self.eat_words(&["IF", "EXISTS"]);
                let from = self.ident("the column to rename")?;
                if !self.eat_word("TO") {
                    return self.fail("expected TO");
                }
                return Ok(vec![AlterOp::RenameColumn(from, self.ident("the new column name")?)]);
            }
            if self.is_word("INDEX") || self.is_word("KEY") {
                return Ok(Vec::new());
            }
            let _ = self.eat_word("TO") || self.eat_word("AS");
            return Ok(vec![AlterOp::RenameTable(self.name()?)]);
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str) -> ColumnDef {
        ColumnDef { name: name.into(), ty: ty.into(), unsigned: false, values: Vec::new() }
    }

    fn name(db: &str, table: &str) -> Name {
        Name { db: db.into(), table: table.into() }
    }

    #[test]
    fn show_create_table_output_reads_as_columns_and_key() {
        let sql = "CREATE TABLE `every type` (\n  `id` int(10) unsigned NOT NULL AUTO_INCREMENT,\n  \
                   `e` enum('red','gr''een','blue') DEFAULT NULL COMMENT 'a, (tricky) comment',\n  \
                   `s` set('a','b') CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT 'a',\n  \
                   `d` decimal(10,2) GENERATED ALWAYS AS (`id` * 2) VIRTUAL,\n  \
                   `key` varchar(20) NOT NULL DEFAULT '',\n  \
                   `dp` double precision,\n  \
                   PRIMARY KEY (`id`,`key`(5)),\n  KEY `k` (`e`),\n  \
                   CONSTRAINT `c` CHECK (json_valid(`s`))\n\
                   ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 /*!50100 PARTITION BY HASH (`id`) PARTITIONS 2 */";
        let Ddl::Create { name: n, columns, primary_key } = parse(sql, "shop").unwrap() else { panic!() };
        assert_eq!(n, name("shop", "every type"));
        let names: Vec<_> = columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "e", "s", "d", "key", "dp"]);
        assert!(columns[0].unsigned && columns[0].ty == "int");
        assert_eq!(columns[1].values, ["red", "gr'een", "blue"]);
        assert_eq!(columns[2].values, ["a", "b"]);
        assert_eq!(columns[5].ty, "double");
        assert_eq!(primary_key, ["id", "key"]);
    }

    #[test]
    fn inline_primary_keys_qualified_names_and_like() {
        let Ddl::Create { name: n, columns, primary_key } =
            parse("create table if not exists crm.t (a bigint primary key, b text) -- note", "x").unwrap()
        else {
            panic!()
        };
        assert_eq!((n, primary_key), (name("crm", "t"), vec!["a".to_owned()]));
        assert_eq!(columns, vec![col("a", "bigint"), col("b", "text")]);
        assert_eq!(
            parse("CREATE TABLE t2 LIKE t", "x").unwrap(),
            Ddl::CreateLike { name: name("x", "t2"), like: name("x", "t") }
        );
        assert_eq!(parse("CREATE TEMPORARY TABLE t (a int)", "x").unwrap(), Ddl::None);
        assert_eq!(parse("CREATE VIEW v AS SELECT 1", "x").unwrap(), Ddl::None);
    }

    #[test]
    fn alter_clauses_in_order_and_the_ones_that_do_not_touch_columns() {
        let sql = "ALTER TABLE `t` ADD COLUMN c INT UNSIGNED NOT NULL AFTER a, ALGORITHM=INPLACE, \
                   ADD INDEX (c), DROP COLUMN IF EXISTS b, MODIFY d VARCHAR(10) FIRST, \
                   CHANGE COLUMN e f ENUM('x','y'), RENAME COLUMN f TO g, ADD (h INT, i INT), \
                   DROP PRIMARY KEY, ADD CONSTRAINT pk PRIMARY KEY (c, g), DROP FOREIGN KEY fk, \
                   RENAME TO t3";
        let Ddl::Alter { name: n, ops } = parse(sql, "db").unwrap() else { panic!() };
        assert_eq!(n, name("db", "t"));
        let unsigned_c = ColumnDef { unsigned: true, ..col("c", "int") };
        let f = ColumnDef { values: vec!["x".into(), "y".into()], ..col("f", "enum") };
        assert_eq!(
            ops,
            vec![
                AlterOp::Add(unsigned_c, Place::After("a".into())),
                AlterOp::Drop("b".into()),
                AlterOp::Redefine("d".into(), col("d", "varchar"), Place::First),
                AlterOp::Redefine("e".into(), f, Place::Keep),
                AlterOp::RenameColumn("f".into(), "g".into()),
                AlterOp::Add(col("h", "int"), Place::Keep),
                AlterOp::Add(col("i", "int"), Place::Keep),
                AlterOp::DropPrimaryKey,
                AlterOp::AddPrimaryKey(vec!["c".into(), "g".into()]),
                AlterOp::RenameTable(name("db", "t3")),
            ]
        );
    }

    #[test]
    fn drop_rename_and_statements_that_change_no_columns() {
        assert_eq!(
            parse("DROP TABLE IF EXISTS `a`,b.c /* generated by server */", "db").unwrap(),
            Ddl::Drop(vec![name("db", "a"), name("b", "c")])
        );
        assert_eq!(
            parse("RENAME TABLE a TO tmp, b TO a", "db").unwrap(),
            Ddl::Rename(vec![(name("db", "a"), name("db", "tmp")), (name("db", "b"), name("db", "a"))])
        );
        assert_eq!(parse("DROP DATABASE IF EXISTS shop", "x").unwrap(), Ddl::DropDatabase("shop".into()));
        assert_eq!(parse("TRUNCATE TABLE t", "x").unwrap(), Ddl::None);
        assert_eq!(parse("CREATE INDEX i ON t (a)", "x").unwrap(), Ddl::None);
    }

    #[test]
    fn broken_statements_name_the_table_and_the_byte() {
        let e = parse("CREATE TABLE t (a", "db").unwrap_err();
        assert_eq!(e.table, Some(name("db", "t")));
        assert!(e.what.contains("type"), "{e}");
        let e = parse("CREATE TABLE t (a INT COMMENT 'unterminated)", "db").unwrap_err();
        assert!(e.what.contains("unterminated"), "{e}");
        assert!(parse("ALTER TABLE t RENAME COLUMN a b", "db").unwrap_err().what.contains("TO"));
        // Nothing panics on arbitrary input.
        for s in ["(", ")", "CREATE TABLE", "ALTER TABLE t ADD (", "`", "/*", "CREATE TABLE t (a INT,", "\u{1f600}"] {
            let _ = parse(s, "db");
        }
    }
}
