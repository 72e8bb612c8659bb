// The HikariCP adapter of the benchmark harness: the same scenarios, loop
// and output as bench/peers/native/bench.c, so bench/run can compare them.
//
//   java -cp ... Bench SCENARIO --db JDBC_URL [--user U --password P]
//        [--matrix T:P,...] [--seconds S] [--warmup S] [--timeline]
//
// The JIT is warmed before anything is measured: every matrix entry runs
// --warmup seconds unmeasured first, and the whole matrix is preceded by a
// warm-up pass.
import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;

public class Bench {
    static final int ROWS = 1000, HB = 64 * 16, TL_MAX = 600;

    static int bucket(long ns) {
        if (ns < 16) return (int) Math.max(ns, 0);
        int o = 63 - Long.numberOfLeadingZeros(ns);
        int b = (o - 3) * 16 + (int) ((ns >> (o - 4)) & 15);
        return Math.min(b, HB - 1);
    }

    static double bucketNs(int b) {
        if (b < 16) return b;
        int o = b / 16 + 3;
        return (16 + (b % 16)) * (double) (1L << (o - 4)) * 1.03;
    }

    static double percentile(long[] h, double q) {
        long n = 0;
        for (long x : h) n += x;
        if (n == 0) return 0;
        long rank = (long) Math.ceil(q * n), seen = 0;
        for (int i = 0; i < HB; i++) {
            seen += h[i];
            if (seen >= rank) return bucketNs(i);
        }
        return bucketNs(HB - 1);
    }

    static class Worker extends Thread {
        final int idx;
        long ops, errors, checksum, expected, waitMax;
        final long[] lat = new long[HB], wait = new long[HB];
        final long[] tlOps = new long[TL_MAX], tlErr = new long[TL_MAX];
        Worker(int idx) { this.idx = idx; }

        public void run() {
            long x = 0x9e3779b97f4a7c15L * (idx + 1);
            while (!stop.get()) {
                x ^= x << 13; x ^= x >>> 7; x ^= x << 17;
                long id = Long.remainderUnsigned(x, ROWS) + 1;
                long t0 = System.nanoTime(), t1 = t0;
                long v = 0;
                boolean ok = false;
                try (Connection c = ds.getConnection()) {
                    t1 = System.nanoTime();
                    if (cycle) {
                        ok = true;
                    } else {
                        try (PreparedStatement p = c.prepareStatement("SELECT v FROM bench WHERE id = ?")) {
                            p.setLong(1, id);
                            try (ResultSet rs = p.executeQuery()) {
                                if (rs.next()) { v = rs.getLong(1); ok = true; }
                            }
                        }
                        if (ok && update) {
                            try (PreparedStatement u = c.prepareStatement("UPDATE bench SET n = n + 1 WHERE id = ?")) {
                                u.setLong(1, id);
                                ok = u.executeUpdate() == 1;
                            }
                        }
                        if (ok) c.commit(); else c.rollback();
                    }
                } catch (Exception e) {
                    ok = false;
                }
                long t2 = System.nanoTime();
                if (!measuring) continue;
                if (timeline) {
                    long slot = (t2 - t0Run) / 100_000_000L;
                    if (slot >= 0 && slot < TL_MAX) { if (ok) tlOps[(int) slot]++; else tlErr[(int) slot]++; }
                }
                if (!ok) {
                    errors++;
                    try { Thread.sleep(1); } catch (InterruptedException ie) { return; }
                    continue;
                }
                ops++;
                lat[bucket(t2 - t0)]++;
                wait[bucket(t1 - t0)]++;
                waitMax = Math.max(waitMax, t1 - t0);
                if (!cycle) { checksum += v; expected += 3 * id; }
            }
        }
    }

    static volatile HikariDataSource ds;
    static final AtomicBoolean stop = new AtomicBoolean();
    static volatile boolean measuring, cycle, update, timeline;
    static volatile long t0Run;

    static long sumN(String url, String user, String pw) throws Exception {
        try (Connection c = java.sql.DriverManager.getConnection(url, user, pw);
             Statement s = c.createStatement();
             ResultSet rs = s.executeQuery("SELECT coalesce(sum(n), 0) FROM bench")) {
            rs.next();
            return rs.getLong(1);
        }
    }

    static String runOne(String scenario, String url, String user, String pw, int threads, int pool,
                         double seconds, double warmup, boolean print) throws Exception {
        HikariConfig cfg = new HikariConfig();
        cfg.setJdbcUrl(url);
        if (user != null) { cfg.setUsername(user); cfg.setPassword(pw); }
        cfg.setMaximumPoolSize(pool);
        cfg.setMinimumIdle(pool);
        cfg.setAutoCommit(cycle);
        cfg.setPoolName("bench");
        ds = new HikariDataSource(cfg);
        long before = update && !timeline ? sumN(url, user, pw) : 0;
        stop.set(false);
        measuring = false;
        List<Worker> ws = new ArrayList<>();
        for (int i = 0; i < threads; i++) { Worker w = new Worker(i); ws.add(w); w.start(); }
        Thread.sleep((long) (warmup * 1000));
        t0Run = System.nanoTime();
        double wall0 = System.currentTimeMillis() / 1000.0;
        measuring = true;
        Thread.sleep((long) (seconds * 1000));
        measuring = false;
        long elapsed = System.nanoTime() - t0Run;
        stop.set(true);
        for (Worker w : ws) w.join();
        ds.close();
        long ops = 0, errors = 0, min = Long.MAX_VALUE, max = 0, sum = 0, exp = 0, waitMax = 0;
        long[] lat = new long[HB], wait = new long[HB];
        for (Worker w : ws) {
            ops += w.ops; errors += w.errors; sum += w.checksum; exp += w.expected;
            min = Math.min(min, w.ops); max = Math.max(max, w.ops); waitMax = Math.max(waitMax, w.waitMax);
            for (int b = 0; b < HB; b++) { lat[b] += w.lat[b]; wait[b] += w.wait[b]; }
        }
        String check = sum == exp ? "ok" : "bad";
        if (update && !timeline && sumN(url, user, pw) - before < ops) check = "bad";
        double secs = elapsed / 1e9;
        long rssKb = 0;
        try {
            for (String line : java.nio.file.Files.readAllLines(java.nio.file.Paths.get("/proc/self/status")))
                if (line.startsWith("VmHWM:")) rssKb = Long.parseLong(line.replaceAll("[^0-9]", ""));
        } catch (Exception e) { /* not Linux */ }
        StringBuilder out = new StringBuilder();
        out.append(String.format(java.util.Locale.ROOT,
            "RESULT {\"system\":\"hikari\",\"scenario\":\"%s\",\"threads\":%d,\"pool\":%d,\"ops\":%d,"
            + "\"secs\":%.3f,\"ops_s\":%.1f,\"p50_us\":%.2f,\"p99_us\":%.2f,\"wait_p99_us\":%.2f,"
            + "\"wait_max_us\":%.1f,\"min_thread\":%d,\"max_thread\":%d,\"errors\":%d,\"checksum\":%d,"
            + "\"check\":\"%s\",\"rss_kb\":%d}",
            scenario, threads, pool, ops, secs, ops / secs, percentile(lat, 0.5) / 1e3,
            percentile(lat, 0.99) / 1e3, percentile(wait, 0.99) / 1e3, waitMax / 1e3, min, max,
            errors, sum, check, rssKb));
        if (timeline) {
            int slots = (int) (elapsed / 100_000_000L);
            StringBuilder o = new StringBuilder(), e = new StringBuilder();
            for (int s = 0; s < slots && s < TL_MAX; s++) {
                long n = 0, m = 0;
                for (Worker w : ws) { n += w.tlOps[s]; m += w.tlErr[s]; }
                o.append(s > 0 ? "," : "").append(n);
                e.append(s > 0 ? "," : "").append(m);
            }
            out.append(String.format(java.util.Locale.ROOT,
                "\nTIMELINE {\"system\":\"hikari\",\"start\":%.3f,\"bucket_ms\":100,\"ops\":[%s],\"errors\":[%s]}",
                wall0, o, e));
        }
        if (print) { System.out.println(out); System.out.flush(); }
        return out.toString();
    }

    public static void main(String[] a) throws Exception {
        String scenario = a[0], url = null, user = null, pw = null, matrix = "1:4";
        double seconds = 1, warmup = 0.5;
        for (int i = 1; i < a.length; i++) {
            switch (a[i]) {
                case "--db": url = a[++i]; break;
                case "--user": user = a[++i]; break;
                case "--password": pw = a[++i]; break;
                case "--matrix": matrix = a[++i]; break;
                case "--seconds": seconds = Double.parseDouble(a[++i]); break;
                case "--warmup": warmup = Double.parseDouble(a[++i]); break;
                case "--timeline": timeline = true; break;
                default: throw new IllegalArgumentException("unknown argument " + a[i]);
            }
        }
        cycle = scenario.equals("cycle");
        // mysql: the pg unit through a jdbc:mariadb:// URL (the same SQL)
        update = scenario.equals("pg") || scenario.equals("recovery") || scenario.equals("mysql");
        String[] entries = matrix.split(",");
        if (!timeline) {
            // JIT warm-up: the first entry once, unmeasured and unprinted
            String[] tp = entries[0].split(":");
            runOne(scenario, url, user, pw, Integer.parseInt(tp[0]), Integer.parseInt(tp[1]),
                   Math.min(1.0, seconds), 0.2, false);
        }
        for (String m : entries) {
            String[] tp = m.split(":");
            runOne(scenario, url, user, pw, Integer.parseInt(tp[0]), Integer.parseInt(tp[1]),
                   seconds, warmup, true);
        }
    }
}
