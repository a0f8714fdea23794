// HikariClient: a HikariCP pool of MariaDB Connector/J connections, the matrix's contract
// (tests/support/drivers/__init__.py). DB_SETTING: "" (Hikari's defaults, a pool of one),
// "idle_timeout" (idleTimeout DB_IDLE_TIMEOUT ms with minimumIdle 0: Hikari closes a
// connection idle that long) or "max_lifetime" (maxLifetime DB_MAX_LIFETIME ms: Hikari
// retires a connection that old). Hikari's housekeeper, which closes idle connections,
// runs every 30 s unless its system property says otherwise (DB_HOUSEKEEPING_MS).

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

public final class HikariClient {
    private HikariClient() {}

    private static long job(HikariDataSource pool) throws SQLException {
        try (Connection connection = pool.getConnection();
                Statement statement = connection.createStatement();
                ResultSet rows = statement.executeQuery("SELECT CONNECTION_ID()")) {
            rows.next();
            return rows.getLong(1);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:mariadb://" + System.getenv("DB_HOST") + ":" + System.getenv("DB_PORT")
                + "/" + System.getenv("DB_NAME") + System.getenv().getOrDefault("DB_JDBC_OPTIONS", "");
        String housekeeping = System.getenv("DB_HOUSEKEEPING_MS");
        if (housekeeping != null) {
            System.setProperty("com.zaxxer.hikari.housekeeping.periodMs", housekeeping);
        }
        HikariConfig config = new HikariConfig();
        config.setJdbcUrl(url);
        config.setUsername(System.getenv("DB_USER"));
        config.setPassword(System.getenv("DB_PASSWORD"));
        config.setMaximumPoolSize(1);
        config.setPoolName("matrix");
        String setting = System.getenv().getOrDefault("DB_SETTING", "");
        switch (setting) {
            case "":
                break;
            case "idle_timeout":
                config.setMinimumIdle(0);
                config.setIdleTimeout(Long.parseLong(System.getenv("DB_IDLE_TIMEOUT")));
                break;
            case "max_lifetime":
                config.setMaxLifetime(Long.parseLong(System.getenv("DB_MAX_LIFETIME")));
                break;
            default:
                System.out.println("fatal unknown DB_SETTING " + setting);
                System.exit(2);
        }
        try (HikariDataSource pool = new HikariDataSource(config)) {
            System.out.println("ready " + job(pool));
            System.out.flush();
            BufferedReader input = new BufferedReader(new InputStreamReader(System.in));
            for (String line; (line = input.readLine()) != null && !line.equals("exit"); ) {
                try {
                    System.out.println("ok " + job(pool));
                } catch (SQLException error) {
                    System.out.println("error " + error.getErrorCode() + " "
                            + error.getClass().getSimpleName() + " " + error.getSQLState() + " "
                            + error.getMessage().replace('\n', ' '));
                }
                System.out.flush();
            }
        }
    }
}
