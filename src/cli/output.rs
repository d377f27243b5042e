//! How answers are shown: plain-text tables (kubectl-like columns, nothing to strip for `grep`
//! or `awk`) by default, the server's JSON with `--json`.

use comfy_table::{Table, presets};
use serde_json::Value;

/// Longest cell in a list; longer values (errors, response snippets) are cut with `…`.
const MAX_LIST_CELL: usize = 60;

/// The output mode of a command.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Print JSON instead of tables.
    pub json: bool,
}

impl Output {
    pub fn new(json: bool) -> Output {
        Output { json }
    }

    /// Prints `v` as pretty JSON.
    pub fn print_json(&self, v: &Value) {
        match serde_json::to_string_pretty(v) {
            Ok(s) => println!("{s}"),
            Err(_) => println!("{v}"),
        }
    }

    /// One resource: its JSON, or a two-column table of its fields, `first` in that order and
    /// the rest after them.
    pub fn record(&self, v: &Value, first: &[&str]) {
        if self.json {
            return self.print_json(v);
        }
        print_table(&mut record_table(v, first));
    }

    /// A page `{items: [...], ...}`: its JSON, or a table of `columns` (header, field).
    pub fn list(&self, page: &Value, columns: &[(&str, &str)]) {
        if self.json {
            return self.print_json(page);
        }
        print_table(&mut list_table(page, columns));
    }
}

/// Prints a table flush left, columns two spaces apart, no trailing blanks.
fn print_table(t: &mut Table) {
    for line in render(t) {
        println!("{line}");
    }
}

fn render(t: &mut Table) -> Vec<String> {
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    t.lines().map(|l| l.trim_end().to_owned()).collect()
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t
}

/// A field's value as text: strings bare, lists of strings comma-joined, `null` as `-`, anything
/// else as compact JSON.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.is_empty() => "(all)".into(),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

fn shorten(s: String) -> String {
    let one_line = s.replace(['\n', '\r', '\t'], " ");
    if one_line.chars().count() <= MAX_LIST_CELL {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(MAX_LIST_CELL - 1).collect();
    cut.push('…');
    cut
}

pub fn record_table(v: &Value, first: &[&str]) -> Table {
    let mut t = table();
    let Some(obj) = v.as_object() else {
        t.add_row(vec![cell(Some(v))]);
        return t;
    };
    for k in first {
        if let Some(val) = obj.get(*k) {
            t.add_row(vec![(*k).to_owned(), cell(Some(val))]);
        }
    }
    for (k, val) in obj {
        if !first.contains(&k.as_str()) {
            t.add_row(vec![k.clone(), cell(Some(val))]);
        }
    }
    t
}

pub fn list_table(page: &Value, columns: &[(&str, &str)]) -> Table {
    let mut t = table();
    t.set_header(columns.iter().map(|(h, _)| *h).collect::<Vec<_>>());
    let items = page.get("items").and_then(Value::as_array);
    for item in items.into_iter().flatten() {
        t.add_row(
            columns
                .iter()
                .map(|(_, f)| shorten(cell(item.get(*f))))
                .collect::<Vec<_>>(),
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_are_readable() {
        assert_eq!(cell(None), "-");
        assert_eq!(cell(Some(&json!(null))), "-");
        assert_eq!(cell(Some(&json!("a"))), "a");
        assert_eq!(cell(Some(&json!(["A", "B"]))), "A,B");
        assert_eq!(cell(Some(&json!([]))), "(all)");
        assert_eq!(cell(Some(&json!(3))), "3");
        assert_eq!(
            cell(Some(&json!({"maxAttempts": 4}))),
            r#"{"maxAttempts":4}"#
        );
    }

    #[test]
    fn lists_have_a_header_and_a_row_per_item_with_long_cells_cut() {
        let long = "x".repeat(200);
        let page = json!({"items": [
            {"id": "sub_1", "state": "active"},
            {"id": "sub_2", "state": long},
        ]});
        let lines = render(&mut list_table(&page, &[("ID", "id"), ("STATE", "state")]));
        let text = lines.join("\n");
        assert_eq!(lines[0], "ID     STATE", "{text}");
        assert_eq!(lines[1], "sub_1  active", "{text}");
        assert!(text.contains('…') && !text.contains(&long), "{text}");
    }

    #[test]
    fn records_put_the_named_fields_first() {
        let v = json!({"b": 1, "id": "t1", "a": "z"});
        let text = render(&mut record_table(&v, &["id"])).join("\n");
        let keys: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(keys, ["id", "a", "b"], "{text}");
    }
}
