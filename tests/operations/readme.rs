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
