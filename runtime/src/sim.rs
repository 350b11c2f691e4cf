//! A seeded simulation (filled in next).
