use super::*;
use proptest::prelude::*;
use serde_json::json;

#[test]
fn alpaca_records_with_input_system_and_history() {
    let c = conversation(&json!({"instruction": "Translate", "input": "bonjour", "output": "hello", "system": "Be exact.", "history": [["hi", "hey"]]})).unwrap();
    let roles: Vec<Role> = c.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, vec![Role::System, Role::User, Role::Assistant, Role::User, Role::Assistant]);
    assert_eq!(c.messages[3].content, "Translate\nbonjour");
    assert_eq!(c.category, "general");
    let plain = conversation(&json!({"instruction": "Sum 2+2", "input": "", "output": "#### 4", "category": "Math"})).unwrap();
    assert_eq!(plain.messages.len(), 2);
    assert_eq!(plain.category, "math");
}

#[test]
fn sharegpt_and_openai_conversations() {
    let a = conversation(&json!({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]})).unwrap();
    let b = conversation(&json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})).unwrap();
    assert_eq!(a.messages, b.messages);
    assert!(conversation(&json!({"messages": [{"role": "robot", "content": "q"}]})).is_err());
    assert!(conversation(&json!({"text": "pretraining text"})).is_err());
    assert!(conversation(&json!({"instruction": "q", "output": "  "})).is_err());
}

#[test]
fn preference_formats() {
    let trl = preference_pair(&json!({"prompt": "q", "chosen": "good", "rejected": "bad"})).unwrap();
    let factory = preference_pair(&json!({
        "conversations": [{"from": "human", "value": "q"}],
        "chosen": {"from": "gpt", "value": "good"},
        "rejected": {"from": "gpt", "value": "bad"}
    }))
    .unwrap();
    let conversational = preference_pair(&json!({
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}]
    }))
    .unwrap();
    assert_eq!(trl, factory);
    assert_eq!(trl, conversational);
    assert!(preference_pair(&json!({"prompt": "q", "chosen": "same", "rejected": "same"})).is_err());
    assert!(preference_pair(&json!({"prompt": "q", "chosen": "a"})).is_err());
}

#[test]
fn files_in_every_format_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let records = vec![json!({"instruction": "a", "input": "", "output": "b"}), json!({"instruction": "c", "input": "d", "output": "e"})];
    std::fs::write(dir.path().join("x.json"), serde_json::to_string(&records).unwrap()).unwrap();
    let lines: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(dir.path().join("x.jsonl"), &lines).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, serde_json::to_string(&records).unwrap().as_bytes()).unwrap();
    std::fs::write(dir.path().join("x.json.gz"), gz.finish().unwrap()).unwrap();
    // Parquet with the same columns.
    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    let col = |v: [&str; 2]| std::sync::Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
    let batch = RecordBatch::try_from_iter([("instruction", col(["a", "c"])), ("input", col(["", "d"])), ("output", col(["b", "e"]))]).unwrap();
    let file = std::fs::File::create(dir.path().join("x.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    for name in ["x.json", "x.jsonl", "x.json.gz", "x.parquet"] {
        let read = read_records(&dir.path().join(name)).unwrap();
        let convs: Vec<Conversation> = read.iter().map(|r| conversation(r).unwrap()).collect();
        assert_eq!(convs[1].messages[0].content, "c\nd", "{name}");
        assert_eq!(convs.len(), 2, "{name}");
    }
    std::fs::write(dir.path().join("bad.jsonl"), "{\"a\": 1}\nnot json\n").unwrap();
    let error = read_records(&dir.path().join("bad.jsonl")).unwrap_err().to_string();
    assert!(error.contains("line 2"), "{error}");
}

#[test]
fn the_shared_samples_parse() {
    let Some(root) = std::env::var_os("DSLLM_SHARED_DATA").map(std::path::PathBuf::from).or_else(|| {
        let p = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())).join("../../../shared/data");
        p.exists().then_some(p)
    }) else {
        println!("skipped: ../shared/data is absent");
        return;
    };
    for name in ["sft_en.json.gz", "sft_zh.json.gz"] {
        let records = read_records(&root.join("align").join(name)).unwrap();
        let ok = records.iter().filter(|r| conversation(r).is_ok()).count();
        println!("{name}: {ok} of {} records parse", records.len());
        assert!(ok * 100 >= records.len() * 99);
    }
    for name in ["dpo_en.json.gz", "dpo_zh.json.gz"] {
        let records = read_records(&root.join("align").join(name)).unwrap();
        let ok = records.iter().filter(|r| preference_pair(r).is_ok()).count();
        println!("{name}: {ok} of {} pairs parse", records.len());
        assert!(ok * 100 >= records.len() * 99);
    }
}

#[test]
fn final_answers() {
    assert_eq!(extract_final_answer("so 3 + 4 = 7\n#### 7").as_deref(), Some("7"));
    assert_eq!(extract_final_answer("#### 1,234 tail\nmore").as_deref(), Some("1234"));
    assert_eq!(extract_final_answer("no marker"), None);
    assert_eq!(extract_final_answer("####   "), None);
}

proptest! {
    #[test]
    fn parsers_never_panic(record in "\\PC{0,80}") {
        if let Ok(value) = serde_json::from_str::<Value>(&record) {
            let _ = conversation(&value);
            let _ = preference_pair(&value);
            let _ = task_item(&value);
        }
    }

    #[test]
    fn alpaca_round_trips(instruction in "[a-z ]{1,20}", output in "[a-z0-9 ]{0,20}[a-z0-9]") {
        let c = conversation(&json!({"instruction": instruction, "input": "", "output": output})).unwrap();
        prop_assert_eq!(&c.messages[0].content, &instruction);
        prop_assert_eq!(&c.messages[1].content, &output);
    }
}
