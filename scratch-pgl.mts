import { PGlite } from '@electric-sql/pglite';
const pg = await PGlite.create();
await pg.exec('create table t (b bytea, a text[])');
await pg.query('insert into t values ($1, $2)', [Buffer.from('héllo'), ['x','y']]);
const r = await pg.query('select b, a, (select count(*) from t) c, now() n, $1::text[] as arr from t', [['p','q']]);
console.log(r.rows, r.rows[0].b.constructor.name);
const r2 = await pg.query(`select * from unnest($1::text[], $2::bytea[]) as m(x, y)`, [['a','b'], [Buffer.from('1'), Buffer.from('2')]]).catch(e=>console.log('err', e.message));
console.log(r2?.rows);
