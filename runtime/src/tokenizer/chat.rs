//! Chat formats: how a user's turn is wrapped for each family's
//! instruction-tuned models, and which token ends the assistant's reply.
//! The quantizer picks the format from `tokenizer_config.json`'s
//! `chat_template` by its markers; the text is written into a caller buffer.

use crate::error::Error;
use crate::format::tokenizer::ChatTemplate;

impl ChatTemplate {
    /// Writes one user turn, followed by the opening of the assistant's
    /// reply, into `out`. `first` is the conversation's first turn (the
    /// BOS token is added by encoding with special tokens, not here).
    pub fn user_turn<'o>(
        self,
        message: &str,
        first: bool,
        out: &'o mut [u8],
    ) -> Result<&'o str, Error> {
        let (open, close): (&str, &str) = match self {
            ChatTemplate::Plain => (if first { "User: " } else { "\nUser: " }, "\nAssistant:"),
            ChatTemplate::ChatMl => ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"),
            ChatTemplate::Llama3 => (
                "<|start_header_id|>user<|end_header_id|>\n\n",
                "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            ),
            ChatTemplate::Inst => ("[INST] ", " [/INST]"),
            ChatTemplate::Tulu => ("<|user|>\n", "\n<|assistant|>\n"),
            ChatTemplate::Granite => (
                "<|start_of_role|>user<|end_of_role|>",
                "<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>",
            ),
        };
        let sep = match self {
            // After the previous reply's end token.
            ChatTemplate::ChatMl | ChatTemplate::Granite if !first => "\n",
            _ => "",
        };
        let needed = sep.len() + open.len() + message.len() + close.len();
        let provided = out.len();
        let dst = out.get_mut(..needed).ok_or(Error::BufferTooSmall {
            what: "chat turn",
            needed,
            provided,
        })?;
        let mut n = 0;
        for part in [sep, open, message, close] {
            dst[n..n + part.len()].copy_from_slice(part.as_bytes());
            n += part.len();
        }
        // Concatenated whole strings.
        core::str::from_utf8(dst).map_err(|_| Error::BadTokenizer {
            reason: "chat turn is not UTF-8",
        })
    }

    /// The token text that ends an assistant reply besides the model's EOS.
    pub fn end_of_turn(self) -> Option<&'static str> {
        match self {
            ChatTemplate::ChatMl => Some("<|im_end|>"),
            ChatTemplate::Llama3 => Some("<|eot_id|>"),
            ChatTemplate::Granite => Some("<|end_of_text|>"),
            ChatTemplate::Plain | ChatTemplate::Inst | ChatTemplate::Tulu => None,
        }
    }

    /// The format's name.
    pub fn name(self) -> &'static str {
        match self {
            ChatTemplate::Plain => "plain",
            ChatTemplate::ChatMl => "chatml",
            ChatTemplate::Llama3 => "llama3",
            ChatTemplate::Inst => "inst",
            ChatTemplate::Tulu => "tulu",
            ChatTemplate::Granite => "granite",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_turns() {
        let mut buf = [0u8; 128];
        assert_eq!(
            ChatTemplate::ChatMl
                .user_turn("hi", true, &mut buf)
                .unwrap(),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            ChatTemplate::ChatMl
                .user_turn("x", false, &mut buf)
                .unwrap(),
            "\n<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
        );
        let mut small = [0u8; 8];
        assert!(matches!(
            ChatTemplate::Inst.user_turn("hello", true, &mut small),
            Err(Error::BufferTooSmall { needed: 20, .. })
        ));
    }
}
