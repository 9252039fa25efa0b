"""A second existing Flask-SQLAlchemy app, not on the HRP tables: a lending library written the
usual way (db.Model with Column, a many-to-many table, Numeric, Boolean, JSON and DateTime columns,
db.paginate, Model.query, db.create_all() at start, a raw SQL report with avg() over a decimal).
Integrated with the one line marked `hrp-cutover`."""
import datetime as dt
import decimal
import os
from flask import Flask, jsonify, request, abort
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase
from hrp_data.web import HrpCutover  # hrp-cutover


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)

book_tags = db.Table(
    "book_tags",
    db.Column("book_id", db.Integer, db.ForeignKey("book.id"), primary_key=True),
    db.Column("tag_id", db.Integer, db.ForeignKey("tag.id"), primary_key=True),
)


class Author(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(120), nullable=False, unique=True)
    born = db.Column(db.Date)
    books = db.relationship("Book", backref="author", lazy=True)


class Tag(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    label = db.Column(db.String(50), unique=True)


class Book(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    title = db.Column(db.String(200), nullable=False)
    author_id = db.Column(db.Integer, db.ForeignKey("author.id"))
    price = db.Column(db.Numeric(8, 2))
    rating = db.Column(db.Float)
    available = db.Column(db.Boolean, default=True, nullable=False)
    added_at = db.Column(db.DateTime, default=dt.datetime.utcnow)
    meta = db.Column(db.JSON)
    tags = db.relationship("Tag", secondary=book_tags, lazy="subquery", backref=db.backref("books", lazy=True))


class Loan(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    book_id = db.Column(db.Integer, db.ForeignKey("book.id"), nullable=False)
    borrower = db.Column(db.String(80))
    due = db.Column(db.DateTime)
    returned = db.Column(db.Boolean, default=False)


def as_dict(book):
    return {"id": book.id, "title": book.title, "author": book.author.name if book.author else None,
            "price": str(book.price) if book.price is not None else None, "price_type": type(book.price).__name__,
            "rating": book.rating, "available": book.available, "available_type": type(book.available).__name__,
            "added_at": book.added_at.isoformat() if book.added_at else None,
            "added_naive": book.added_at.tzinfo is None if book.added_at else None,
            "meta": book.meta, "tags": sorted(t.label for t in book.tags)}


def create_app(test_config=None):
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("LIBRARY_DB", "sqlite:///library.db")
    app.config.update(test_config or {})
    db.init_app(app)
    with app.app_context():
        db.create_all()
    HrpCutover().init_app(app, db=db)  # hrp-cutover

    @app.get("/books")
    def books():
        page = db.paginate(db.select(Book).order_by(Book.id), page=request.args.get("page", 1, type=int), per_page=20)
        return jsonify([as_dict(b) for b in page.items])

    @app.get("/books/<int:book_id>")
    def book(book_id):
        return jsonify(as_dict(db.get_or_404(Book, book_id)))

    @app.post("/books")
    def add_book():
        data = request.get_json()
        author = Author.query.filter_by(name=data["author"]).first()
        if author is None:
            author = Author(name=data["author"], born=dt.date(1970, 1, 2))
            db.session.add(author)
        tags = []
        for label in sorted(set(data.get("tags", []))):
            tag = db.session.execute(db.select(Tag).filter_by(label=label)).scalar_one_or_none() or Tag(label=label)
            tags.append(tag)
        book = Book(title=data["title"], author=author, price=decimal.Decimal(data["price"]), rating=data.get("rating"),
                    meta=data.get("meta"), tags=tags)
        db.session.add(book)
        db.session.commit()
        return jsonify(as_dict(book)), 201

    @app.post("/books/<int:book_id>/loan")
    def loan(book_id):
        book = db.get_or_404(Book, book_id)
        if not book.available:
            abort(409)
        book.available = False
        db.session.add(Loan(book_id=book.id, borrower=request.get_json()["who"],
                            due=dt.datetime.utcnow() + dt.timedelta(days=14)))
        db.session.commit()
        return jsonify(as_dict(book))

    @app.post("/books/<int:book_id>/return")
    def give_back(book_id):
        loan = Loan.query.filter_by(book_id=book_id, returned=False).order_by(Loan.id.desc()).first_or_404()
        loan.returned = True
        Book.query.filter_by(id=book_id).update({"available": True})
        db.session.commit()
        overdue = loan.due < dt.datetime.utcnow()
        return jsonify({"overdue": overdue})

    @app.delete("/books/<int:book_id>")
    def delete(book_id):
        book = db.get_or_404(Book, book_id)
        book.tags = []
        Loan.query.filter_by(book_id=book_id).delete()
        db.session.delete(book)
        db.session.commit()
        return "", 204

    @app.get("/stats")
    def stats():
        rows = db.session.execute(db.text(
            "SELECT a.name, count(b.id) AS n, avg(b.price) AS avg_price FROM author a LEFT JOIN book b ON b.author_id = a.id"
            " GROUP BY a.name ORDER BY a.name")).all()
        return jsonify([[r.name, r.n, float(r.avg_price) if r.avg_price is not None else None] for r in rows])

    return app
