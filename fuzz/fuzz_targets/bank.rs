//! Question banks: arbitrary bytes → `Bank::parse`, then the invariants the server relies
//! on, and a bank written back as JSON reads back the same.

#![no_main]

use std::collections::HashSet;

use examflow_engine::Bank;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(bank) = Bank::parse("fuzz", "fuzz.json", data) else {
        return;
    };
    assert!(!bank.items.is_empty());
    let mut ids = HashSet::new();
    for item in &bank.items {
        assert!(ids.insert(item.id.as_str()), "duplicate id {}", item.id);
        assert!(item.options.len() >= 2);
        let index = item.correct_index();
        assert!(index < item.options.len());
        assert_eq!(item.options[index], item.correct_answer);
        assert_eq!(bank.item(&item.id), Some(item));
    }
    // Items serialise with their ids, so the bank reads back identical.
    let text = serde_json::to_vec(&bank.items).unwrap();
    let again = Bank::parse("fuzz", "fuzz.json", &text).unwrap();
    assert_eq!(again, bank);
});
