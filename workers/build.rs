//! The migrations (`sqlx::migrate!`) and the SQL project (`include_dir!`) are compiled into
//! the binary, but neither macro tells Cargo about files added to their folders; without this,
//! a new migration or model would be missing from an incremental build.

fn main() {
    println!("cargo:rerun-if-changed=../sql");
}
