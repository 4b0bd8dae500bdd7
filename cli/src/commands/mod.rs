pub mod check;
pub mod parse;
