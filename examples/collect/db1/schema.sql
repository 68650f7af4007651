CREATE TABLE t (id integer primary key, name text);
