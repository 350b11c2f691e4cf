//! The README's walk-through from an empty crate is `examples/quickstart` (a workspace member,
//! so CI builds it and runs its fault test): each file the README shows after a
//! `<!-- file: PATH -->` marker must equal that file, byte for byte.

use std::path::Path;

#[test]
fn the_readme_shows_the_quickstart_files_exactly_as_they_are() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let mut shown = 0;
    let mut rest = readme.as_str();
    while let Some(at) = rest.find("<!-- file: ") {
        rest = &rest[at + "<!-- file: ".len()..];
        let (path, after) = rest.split_once(" -->").expect("a closed marker");
        let after = after.trim_start_matches('\n');
        let (_fence, block) = after
            .split_once('\n')
            .expect("a code block after the marker");
        let end = block.find("\n```\n").expect("the code block ends");
        let text = &block[..=end];
        let file = std::fs::read_to_string(root.join(path))
            .unwrap_or_else(|e| panic!("the README shows {path}, which cannot be read: {e}"));
        assert_eq!(text, file, "the README's {path} differs from the file");
        shown += 1;
        rest = &block[end..];
    }
    assert_eq!(shown, 4, "the README shows the quickstart's four files");
}
