// go-sql-client: Go's database/sql with go-sql-driver/mysql, the matrix's contract
// (tests/support/drivers/__init__.py). database/sql is itself a pool; DB_SETTING
// "max_idle_time" sets SetConnMaxIdleTime(DB_MAX_IDLE seconds).
package main

import (
	"bufio"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/go-sql-driver/mysql"
)

func describe(err error) string {
	var server *mysql.MySQLError
	if errors.As(err, &server) {
		return fmt.Sprintf("%d MySQLError %s", server.Number, server.Message)
	}
	return fmt.Sprintf("- %T %v", err, err)
}

func main() {
	config := mysql.NewConfig()
	config.User = os.Getenv("DB_USER")
	config.Passwd = os.Getenv("DB_PASSWORD")
	config.Net = "tcp"
	config.Addr = net.JoinHostPort(os.Getenv("DB_HOST"), os.Getenv("DB_PORT"))
	config.DBName = os.Getenv("DB_NAME")
	config.AllowNativePasswords = true
	config.AllowCleartextPasswords = false
	connector, err := mysql.NewConnector(config)
	if err != nil {
		fmt.Println("fatal", err)
		os.Exit(2)
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(1)
	switch setting := os.Getenv("DB_SETTING"); setting {
	case "":
	case "max_idle_time":
		seconds, err := strconv.ParseFloat(os.Getenv("DB_MAX_IDLE"), 64)
		if err != nil {
			fmt.Println("fatal DB_MAX_IDLE:", err)
			os.Exit(2)
		}
		db.SetConnMaxIdleTime(time.Duration(seconds * float64(time.Second)))
	default:
		fmt.Println("fatal unknown DB_SETTING", setting)
		os.Exit(2)
	}
	job := func() (int64, error) {
		var id int64
		err := db.QueryRow("SELECT CONNECTION_ID()").Scan(&id)
		return id, err
	}
	id, err := job()
	if err != nil {
		fmt.Println("fatal", describe(err))
		os.Exit(1)
	}
	fmt.Println("ready", id)
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		if lines.Text() == "exit" {
			break
		}
		if id, err := job(); err != nil {
			fmt.Println("error", describe(err))
		} else {
			fmt.Println("ok", id)
		}
	}
}
