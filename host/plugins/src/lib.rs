//! tmp
#![allow(dead_code, unused_imports)]
mod bindings;
