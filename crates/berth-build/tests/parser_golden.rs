//! Golden tests: every `testdata/parser/<case>/Dockerfile` must parse to
//! `expected`; every `testdata/parser-negative/<case>/Dockerfile` must fail
//! with the message in `expected`. `UPDATE_EXPECT=1` rewrites the expected files.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use berth_build::instructions::parse_dockerfile;
use berth_build::parser::parse;

fn cases(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(dir);
    let mut cases: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("reading {}: {e}", root.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases under {}", root.display());
    cases
}

fn render(text: &str) -> Result<String, String> {
    let ast = parse(text).map_err(|e| e.to_string())?;
    let parsed = parse_dockerfile(text).map_err(|e| e.to_string())?;
    let mut out = String::new();
    writeln!(out, "# directives").unwrap();
    writeln!(out, "{}", serde_json::to_string(&ast.directives).unwrap()).unwrap();
    writeln!(out, "# nodes").unwrap();
    for node in &ast.nodes {
        writeln!(out, "{}", node.dump()).unwrap();
    }
    writeln!(out, "# instructions").unwrap();
    for instruction in &parsed.global_args {
        writeln!(
            out,
            "global {}",
            serde_json::to_string(instruction).unwrap()
        )
        .unwrap();
    }
    for stage in &parsed.stages {
        writeln!(
            out,
            "stage {} {}",
            stage.index,
            serde_json::to_string(&stage.from).unwrap()
        )
        .unwrap();
        for instruction in &stage.instructions {
            writeln!(out, "  {}", serde_json::to_string(instruction).unwrap()).unwrap();
        }
    }
    if !ast.warnings.is_empty() {
        writeln!(out, "# warnings").unwrap();
        for warning in &ast.warnings {
            writeln!(out, "{}", serde_json::to_string(warning).unwrap()).unwrap();
        }
    }
    Ok(out)
}

fn check(case: &Path, actual: &str, failures: &mut Vec<String>) {
    let expected_path = case.join("expected");
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        fs::write(&expected_path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&expected_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_EXPECT=1)",
            expected_path.display()
        )
    });
    if expected != actual {
        failures.push(format!(
            "{}:\n--- expected\n{expected}\n--- actual\n{actual}",
            case.display()
        ));
    }
}

#[test]
fn positive_cases_match_expected() {
    let mut failures = Vec::new();
    for case in cases("parser") {
        let text = fs::read_to_string(case.join("Dockerfile")).unwrap();
        match render(&text) {
            Ok(actual) => check(&case, &actual, &mut failures),
            Err(e) => failures.push(format!("{}: unexpected error: {e}", case.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn negative_cases_fail_with_expected_message() {
    let mut failures = Vec::new();
    for case in cases("parser-negative") {
        let text = fs::read_to_string(case.join("Dockerfile")).unwrap();
        match parse_dockerfile(&text) {
            Ok(_) => failures.push(format!("{}: parsed but must fail", case.display())),
            Err(e) => check(&case, &format!("{e}\n"), &mut failures),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
