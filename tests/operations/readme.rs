//! The README's state diagram is the output of `invoice-cases states`.

const BEGIN: &str = "<!-- states:begin -->";
const END: &str = "<!-- states:end -->";

/// The text between the markers, from the line after the begin marker.
fn section(readme: &str) -> Result<&str, String> {
    let start = readme
        .find(BEGIN)
        .ok_or_else(|| format!("README.md has no {BEGIN} marker"))?;
    let after_marker = &readme[start + BEGIN.len()..];
    let end = after_marker
        .find(END)
        .ok_or_else(|| format!("README.md has no {END} marker after {BEGIN}"))?;
    Ok(after_marker[..end]
        .strip_prefix('\n')
        .unwrap_or(&after_marker[..end]))
}

/// Compares the README with the generated diagram; the error tells what to
/// do.
fn compare(readme: &str, generated: &str) -> Result<(), String> {
    let section = section(readme)?;
    if section == generated {
        return Ok(());
    }
    let differing: Vec<String> = section
        .lines()
        .map(Some)
        .chain(std::iter::repeat(None))
        .zip(generated.lines().map(Some).chain(std::iter::repeat(None)))
        .take_while(|(a, b)| a.is_some() || b.is_some())
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .take(10)
        .map(|(i, (a, b))| {
            format!(
                "  line {}: README {:?}\n           states {:?}",
                i + 1,
                a.unwrap_or("<none>"),
                b.unwrap_or("<none>")
            )
        })
        .collect();
    Err(format!(
        "README.md's state diagram is out of date: update the section between {BEGIN} and \
         {END} in README.md with the exact output of `cargo run -- states` \
         (`invoice-cases states`). First differences:\n{}\n--- the output of \
         `invoice-cases states` ---\n{generated}",
        if differing.is_empty() {
            "  (only line endings or the final newline differ)".to_owned()
        } else {
            differing.join("\n")
        }
    ))
}

async fn generated() -> String {
    let output = tokio::process::Command::new(crate::binary::BIN)
        .arg("states")
        .output()
        .await
        .expect("run invoice-cases states");
    assert!(output.status.success(), "invoice-cases states failed");
    let generated = String::from_utf8(output.stdout).expect("utf-8");
    assert!(
        !generated.trim().is_empty(),
        "invoice-cases states printed nothing"
    );
    generated
}

#[tokio::test]
async fn the_readme_state_diagram_is_the_output_of_invoice_cases_states() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).expect("read README.md");
    if let Err(message) = compare(&readme, &generated().await) {
        panic!("{message}");
    }
}

#[tokio::test]
async fn a_readme_that_differs_fails_with_what_to_update() {
    let generated = generated().await;
    let readme = format!("# x\n\n{BEGIN}\n{generated}{END}\n");
    assert_eq!(compare(&readme, &generated), Ok(()));
    let stale = readme.replacen("--> NEW", "--> OPEN", 1);
    assert_ne!(stale, readme, "the diagram has a NEW state");
    let message = compare(&stale, &generated).expect_err("a stale README");
    assert!(
        message.contains("update the section") && message.contains("OPEN"),
        "{message}"
    );
    let unmarked = compare("# no markers", &generated).expect_err("no markers");
    assert!(unmarked.contains(BEGIN), "{unmarked}");
}

/// The flags of `serve --help` that the README's configuration table does
/// not list.
fn undocumented_flags(readme: &str, help: &str) -> Vec<String> {
    let table = readme
        .split_once("## Configuration")
        .map(|(_, rest)| rest.split_once("\n## ").map_or(rest, |(table, _)| table))
        .unwrap_or_default();
    let mut missing: Vec<String> = help
        .lines()
        .filter_map(|line| {
            // An option's line starts with it (after a short form).
            let at = line.find("--")?;
            let before = line[..at].trim();
            if !(before.is_empty() || (before.starts_with('-') && before.ends_with(','))) {
                return None;
            }
            let name: String = line[at..]
                .chars()
                .take_while(|c| *c == '-' || c.is_ascii_alphanumeric())
                .collect();
            Some(name)
        })
        .filter(|flag| flag.len() > 2 && !matches!(flag.as_str(), "--help" | "--version"))
        .filter(|flag| !table.contains(&format!("`{flag}`")))
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

#[tokio::test]
async fn every_serve_setting_is_in_the_readme_configuration_table() {
    let output = tokio::process::Command::new(crate::binary::BIN)
        .args(["serve", "--help"])
        .output()
        .await
        .expect("run invoice-cases serve --help");
    assert!(output.status.success(), "serve --help failed");
    let help = String::from_utf8(output.stdout).expect("utf-8");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).expect("read README.md");
    assert!(help.contains("--listen"), "{help}");
    let missing = undocumented_flags(&readme, &help);
    assert!(
        missing.is_empty(),
        "settings of `invoice-cases serve --help` missing from README's configuration table: {missing:?}"
    );
    // And the check finds a missing one.
    let without = readme.replace("`--db-stream-pool-size`", "`--db-stream-pool`");
    assert_eq!(
        undocumented_flags(&without, &help),
        ["--db-stream-pool-size"]
    );
}
