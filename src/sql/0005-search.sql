-- 0005: full-text search of subjects, last messages and messages (SPEC 5,
-- conversations_fts and messages_fts; dexsync search).
--
-- Two FTS5 tables with external content: they hold only the index, the
-- text stays in conversations and messages, and `SELECT ... FROM
-- conversations_fts` reads it from there.  The rowid of an index entry is
-- the rowid of its row.
--
-- Tokenizer: porter over unicode61 remove_diacritics 2.  unicode61 folds
-- case and, with remove_diacritics 2, every diacritic ("café" and "cafe",
-- "exportación" and "exportacion" are the same token either way round);
-- porter then stems English words, so that "exports", "exported" and
-- "exporting" find "export" -- what people look for in support text, where
-- LIKE finds none of them.  The cost: stemming is English only (other
-- languages are matched by whole words, as without it), and a prefix query
-- is stemmed too ("exports*" is "export*").
--
-- Kept in step by the triggers below, in the transaction that changes the
-- row, whoever changes it: the daemon, dexsync, or a user's plain SQL.  An
-- update that changes neither text (status, gone_at, detail) does no index
-- work; an unchanged re-walk writes no row, so nothing to the index.  An
-- initial mirror drops the triggers and builds each index once at its end
-- (db_indexes_defer in db.c, ftsbuild.c), like the deferred indexes.
--
-- The rowid is the link between a row and its entry, so a row must keep
-- its rowid: an UPDATE of rowid is followed by the triggers, and VACUUM
-- keeps rowids in SQLite's copy.  Anything that writes the tables with the
-- triggers dropped (e.g. an import into a copy of the schema without them)
-- must end with INSERT INTO conversations_fts(conversations_fts)
-- VALUES ('rebuild') (and the same for messages_fts).

CREATE VIRTUAL TABLE conversations_fts USING fts5(
	subject,
	last_message_text,
	content = 'conversations',
	content_rowid = 'rowid',
	tokenize = 'porter unicode61 remove_diacritics 2'
);

CREATE VIRTUAL TABLE messages_fts USING fts5(
	text,
	content = 'messages',
	content_rowid = 'rowid',
	tokenize = 'porter unicode61 remove_diacritics 2'
);

-- An external-content entry is deleted with the values it was indexed
-- with: OLD's, before NEW's are added.
CREATE TRIGGER conversations_fts_insert
	AFTER INSERT ON conversations
BEGIN
	INSERT INTO conversations_fts(rowid, subject, last_message_text)
	VALUES (NEW.rowid, NEW.subject, NEW.last_message_text);
END;

CREATE TRIGGER conversations_fts_delete
	AFTER DELETE ON conversations
BEGIN
	INSERT INTO conversations_fts(conversations_fts, rowid, subject, last_message_text)
	VALUES ('delete', OLD.rowid, OLD.subject, OLD.last_message_text);
END;

CREATE TRIGGER conversations_fts_update
	AFTER UPDATE ON conversations
	WHEN OLD.rowid IS NOT NEW.rowid
		OR OLD.subject IS NOT NEW.subject
		OR OLD.last_message_text IS NOT NEW.last_message_text
BEGIN
	INSERT INTO conversations_fts(conversations_fts, rowid, subject, last_message_text)
	VALUES ('delete', OLD.rowid, OLD.subject, OLD.last_message_text);
	INSERT INTO conversations_fts(rowid, subject, last_message_text)
	VALUES (NEW.rowid, NEW.subject, NEW.last_message_text);
END;

CREATE TRIGGER messages_fts_insert
	AFTER INSERT ON messages
BEGIN
	INSERT INTO messages_fts(rowid, text)
	VALUES (NEW.rowid, NEW.text);
END;

CREATE TRIGGER messages_fts_delete
	AFTER DELETE ON messages
BEGIN
	INSERT INTO messages_fts(messages_fts, rowid, text)
	VALUES ('delete', OLD.rowid, OLD.text);
END;

CREATE TRIGGER messages_fts_update
	AFTER UPDATE ON messages
	WHEN OLD.rowid IS NOT NEW.rowid OR OLD.text IS NOT NEW.text
BEGIN
	INSERT INTO messages_fts(messages_fts, rowid, text)
	VALUES ('delete', OLD.rowid, OLD.text);
	INSERT INTO messages_fts(rowid, text)
	VALUES (NEW.rowid, NEW.text);
END;

-- The rows already mirrored, once (db.c logs the migration's time).
INSERT INTO conversations_fts(conversations_fts) VALUES ('rebuild');
INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
