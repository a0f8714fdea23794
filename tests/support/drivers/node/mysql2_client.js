// mysql2_client.js: Node's mysql2, the matrix's contract (tests/support/drivers/__init__.py).
// DB_SETTING: "" is one connection (createConnection), "pool" a pool of one (createPool).
// The connection's 'error' event (the server reset it) is printed as "event CODE" at once.
"use strict";

const readline = require("node:readline");
const mysql = require("mysql2");

const env = process.env;
const options = {
  host: env.DB_HOST,
  port: Number(env.DB_PORT),
  user: env.DB_USER,
  password: env.DB_PASSWORD,
  database: env.DB_NAME,
};
const setting = env.DB_SETTING || "";
let db;
if (setting === "") {
  db = mysql.createConnection(options);
  db.on("error", (error) => console.log(`event ${error.code}`));
} else if (setting === "pool") {
  // The pool handles its connections' errors itself: the application hears of none.
  db = mysql.createPool({ ...options, connectionLimit: 1 });
} else {
  console.log(`fatal unknown DB_SETTING ${setting}`);
  process.exit(2);
}

function job(done) {
  db.query("SELECT CONNECTION_ID() AS id", (error, rows) => done(error, rows && rows[0].id));
}

job((error, id) => {
  if (error) {
    console.log(`fatal ${error.code} ${error.message}`);
    process.exit(1);
  }
  console.log(`ready ${id}`);
  const lines = readline.createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    if (line.trim() === "exit") {
      process.exit(0);
    }
    job((error, id) => {
      if (error) {
        const message = String(error.message).replace(/\n/g, " ");
        console.log(`error ${error.errno ?? "-"} ${error.code ?? "-"} ${message}`);
      } else {
        console.log(`ok ${id}`);
      }
    });
  });
  lines.on("close", () => process.exit(0));
});
