//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds the migration files at
//! compile time, and cargo would otherwise not notice an edited or added `.sql` file.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
