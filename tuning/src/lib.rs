//! basalt-tuning: host checker and tuning profiles.
