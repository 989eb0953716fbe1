fn main() {
    println!("dupr");
}
