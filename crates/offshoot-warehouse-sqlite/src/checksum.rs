//! A table's content checksum: SHA-256 over its column names and every row in a deterministic
//! order, each value hashed with its storage class so `1`, `1.0`, `'1'` and `x'31'` differ.

use sha2::{Digest, Sha256};
use sqlx::sqlite::{Sqlite, SqliteConnection, SqliteRow, SqliteValueRef};
use sqlx::{
    AssertSqlSafe, Column, Decode, Executor, Row, SqlSafeStr, Statement, TypeInfo, ValueRef,
};

use crate::sql_text::quote_identifier;

/// The checksum of `schema.table` (both already resolved to an existing table).
pub(crate) async fn table_checksum(
    connection: &mut SqliteConnection,
    schema: &str,
    table: &str,
) -> Result<String, sqlx::Error> {
    let from = format!("{}.{}", quote_identifier(schema), quote_identifier(table));
    let statement =
        connection.prepare(AssertSqlSafe(format!("SELECT * FROM {from}")).into_sql_str()).await?;
    let columns: Vec<String> =
        statement.columns().iter().map(|column| column.name().to_owned()).collect();

    let mut hasher = Sha256::new();
    hash_bytes(&mut hasher, b"offshoot table checksum v1");
    hasher.update((columns.len() as u64).to_le_bytes());
    for column in &columns {
        hash_bytes(&mut hasher, column.as_bytes());
    }

    // Order by every column, compared bytewise whatever its declared collation, and by storage
    // class so equal-comparing `1` and `1.0` still sort the same way every time.
    let order: Vec<String> = columns
        .iter()
        .map(|column| {
            let column = quote_identifier(column);
            format!("{column} COLLATE BINARY, typeof({column})")
        })
        .collect();
    let select = format!("SELECT * FROM {from} ORDER BY {}", order.join(", "));
    let mut rows: u64 = 0;
    // `try_map` + `fetch_all` streams the rows through the hasher one at a time; the collected
    // vector holds only `()`s.
    sqlx::query(AssertSqlSafe(select))
        .try_map(|row: SqliteRow| {
            rows += 1;
            hash_row(&mut hasher, &row, columns.len())
        })
        .fetch_all(&mut *connection)
        .await?;
    hasher.update(rows.to_le_bytes());
    Ok(hex(&hasher.finalize()))
}

fn hash_row(hasher: &mut Sha256, row: &SqliteRow, width: usize) -> Result<(), sqlx::Error> {
    for index in 0..width {
        let value = row.try_get_raw(index)?;
        if value.is_null() {
            hasher.update([0u8]);
            continue;
        }
        // The value's own storage class, not the column's declared type.
        let storage_class = value.type_info().name().to_owned();
        match storage_class.as_str() {
            "INTEGER" => {
                hasher.update([1u8]);
                hasher.update(decode::<i64>(value)?.to_le_bytes());
            }
            "REAL" => {
                hasher.update([2u8]);
                hasher.update(decode::<f64>(value)?.to_bits().to_le_bytes());
            }
            "TEXT" => {
                hasher.update([3u8]);
                hash_bytes(hasher, decode::<&[u8]>(value)?);
            }
            _ => {
                hasher.update([4u8]);
                hash_bytes(hasher, decode::<&[u8]>(value)?);
            }
        }
    }
    Ok(())
}

fn decode<'r, T: Decode<'r, Sqlite>>(value: SqliteValueRef<'r>) -> Result<T, sqlx::Error> {
    T::decode(value).map_err(sqlx::Error::Decode)
}

/// Length-prefixed, so concatenations cannot collide.
fn hash_bytes(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}
